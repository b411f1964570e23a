// The step profiler: nesting charges the innermost scope, both tables sum to the wall time,
// nothing is counted while disabled, and a model's forward and backward reach every kernel kind.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "model/llama.h"
#include "tensor/profile.h"
#include "test_util.h"

namespace parallama {

namespace {
void busy(double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
  }
}
double sum(const auto& a) {
  double s = 0;
  for (double x : a) s += x;
  return s;
}
}  // namespace

TEST(Profile, NestedScopesChargeTheInnermostAndTablesSumToWallTime) {
  prof::enable(true);
  prof::reset();
  {
    prof::PartScope part(prof::Part::mlp);
    prof::KindScope outer(prof::Kind::attention);
    busy(0.02);
    {
      prof::KindScope inner(prof::Kind::gemm);
      busy(0.03);
    }
    busy(0.01);
  }
  busy(0.01);  // outside every scope: other
  const prof::Report r = prof::report();
  prof::enable(false);
  const auto k = [&](prof::Kind x) { return r.kind_s[static_cast<int>(x)]; };
  // Each busy wait lasts at least its time (longer if the machine is loaded), so only lower
  // bounds are certain; the sums are exact by construction.
  EXPECT_GE(k(prof::Kind::gemm), 0.03);
  EXPECT_GE(k(prof::Kind::attention), 0.03);  // 0.02 before the GEMM, 0.01 after
  EXPECT_GE(k(prof::Kind::other), 0.01);
  EXPECT_GE(r.part_s[static_cast<int>(prof::Part::mlp)], 0.06);
  EXPECT_GE(r.part_s[static_cast<int>(prof::Part::other)], 0.01);
  EXPECT_NEAR(sum(r.kind_s), r.wall_s, 1e-3);
  EXPECT_NEAR(sum(r.part_s), r.wall_s, 1e-3);
  EXPECT_NEAR(r.cell_s[static_cast<int>(prof::Part::mlp)][static_cast<int>(prof::Kind::gemm)],
              k(prof::Kind::gemm), 1e-9);
  EXPECT_EQ(r.calls[static_cast<int>(prof::Kind::gemm)], 1);
}

TEST(Profile, DisabledCountsNothing) {
  prof::enable(false);
  prof::reset();
  {
    prof::KindScope s(prof::Kind::gemm);
    busy(0.005);
  }
  const prof::Report r = prof::report();
  EXPECT_EQ(sum(r.kind_s), 0.0);
  EXPECT_EQ(r.calls[static_cast<int>(prof::Kind::gemm)], 0);
}

TEST(Profile, ModelStepReachesEveryKernelKindAndPart) {
  test::TinyModel m;
  const int64_t B = 2, T = 16;
  std::mt19937 rng(3);
  std::vector<int32_t> tok(B * T), tgt(B * T);
  for (auto& x : tok) x = static_cast<int32_t>(rng() % m.cfg.vocab_size);
  for (auto& x : tgt) x = static_cast<int32_t>(rng() % m.cfg.vocab_size);
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    Llama model(m.layout, B, T, {}, Recompute::none, p);
    prof::enable(true);
    prof::reset();
    model.forward(m.params, tok.data(), tgt.data());
    model.backward(m.params, m.grads, 1.0f / (B * T));
    const prof::Report r = prof::report();
    prof::enable(false);
    using K = prof::Kind;
    for (K k : {K::attention, K::rmsnorm, K::rope, K::swiglu, K::cross_entropy, K::embedding,
                p == Precision::fp32 ? K::gemm : K::gemm_lp})
      EXPECT_GT(r.calls[static_cast<int>(k)], 0) << prof::kind_name(k);
    if (p == Precision::bf16) {
      EXPECT_GT(r.calls[static_cast<int>(K::convert)], 0);
    }
    for (prof::Part part :
         {prof::Part::embedding, prof::Part::attention, prof::Part::mlp, prof::Part::head})
      EXPECT_GT(r.part_s[static_cast<int>(part)], 0.0) << prof::part_name(part);
    EXPECT_NEAR(sum(r.kind_s), r.wall_s, 1e-3);
  }
}

}  // namespace parallama
