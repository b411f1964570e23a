// Mixed precision: the 16-bit conversions, the bf16 / fp16 GEMMs against a double-precision
// product of the same rounded operands, the mixed-precision model against fp32, and the loss
// scaler's rules.
#include <gtest/gtest.h>

#include <array>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>

#include "kernels/cross_entropy.h"
#include "kernels/flash_attention.h"
#include "kernels/matmul.h"
#include "model/llama.h"
#include "tensor/bf16.h"
#include "test_util.h"
#include "train/loss_scale.h"

namespace parallama {

using test::randn;
using test::rel_err;

namespace {
float round_trip(DType t, float x) {
  uint16_t h;
  float y;
  kernels::to_lowp(t, &h, &x, 1);
  kernels::from_lowp(t, &y, &h, 1);
  return y;
}
}  // namespace

TEST(Precision, ConversionsRoundToNearestEvenAndFp16Overflows) {
  // bf16: 8 bits of mantissa. 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to even (1).
  EXPECT_EQ(round_trip(DType::BF16, 1.0f + std::ldexp(1.0f, -8)), 1.0f);
  EXPECT_EQ(round_trip(DType::BF16, 1.0f + 3 * std::ldexp(1.0f, -8)), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(round_trip(DType::BF16, 1e30f), bf16_to_float(float_to_bf16(1e30f)));  // no overflow
  // fp16: 11 bits of mantissa, largest finite 65504; 65520 rounds up to infinity.
  EXPECT_EQ(round_trip(DType::F16, 1.0f + std::ldexp(1.0f, -11)), 1.0f);
  EXPECT_EQ(round_trip(DType::F16, 1.0f + 3 * std::ldexp(1.0f, -11)), 1.0f + std::ldexp(1.0f, -9));
  EXPECT_EQ(round_trip(DType::F16, 65504.0f), 65504.0f);
  EXPECT_TRUE(std::isinf(round_trip(DType::F16, 65520.0f)));
  EXPECT_TRUE(std::isinf(round_trip(DType::F16, -1e6f)));
  EXPECT_TRUE(std::isnan(round_trip(DType::F16, std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(round_trip(DType::BF16, std::numeric_limits<float>::quiet_NaN())));
  // Below fp16's smallest subnormal (2^-24), values vanish: what loss scaling prevents.
  EXPECT_EQ(round_trip(DType::F16, 2e-8f), 0.0f);
  EXPECT_EQ(round_trip(DType::F16, std::ldexp(1.0f, -24)), std::ldexp(1.0f, -24));
  // The vector paths agree with the scalar ones at every length and offset, also on subnormals
  // (which the CPU's own bf16 conversion would take as zero), infinities and NaN.
  auto x = randn(1037, 5, 300.0f);
  const float specials[] = {std::numeric_limits<float>::denorm_min(),
                            -3e-39f,
                            1e-45f * 77,
                            std::numeric_limits<float>::infinity(),
                            -0.0f,
                            std::numeric_limits<float>::quiet_NaN(),
                            1.17549435e-38f};
  for (size_t i = 0; i < std::size(specials); ++i) x[40 + 67 * i] = specials[i];
  for (DType t : {DType::BF16, DType::F16}) {
    std::vector<uint16_t> h(x.size());
    kernels::to_lowp(t, h.data(), x.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      uint16_t one;
      kernels::to_lowp(t, &one, &x[i], 1);
      ASSERT_EQ(one, h[i]) << dtype_name(t) << " at " << i;
    }
  }
}

// The loss's backward fused with the rounding of its gradient gives the bits of the two passes
// one after the other, on rows of a width that is no multiple of the kernel's pieces, with an
// ignored row and a vocabulary-parallel column offset (targets outside this rank's columns).
TEST(Precision, FusedLossGradientRoundingEqualsTheTwoPasses) {
  const int64_t N = 7, V = 2500, v0 = 1000;
  const auto logits = randn(N * V, 11, 4.0f);
  const std::vector<int32_t> targets = {1000, 3499, kernels::kIgnoreIndex, 2001, 17, 1500, 4000};
  // The statistics (row maximum, log-sum-exp) do not depend on the targets: any in range will do.
  std::vector<float> losses(N), stats(2 * N);
  const std::vector<int32_t> local(N, 0);
  kernels::cross_entropy_forward(losses.data(), stats.data(), logits.data(), local.data(), N, V);
  for (DType t : {DType::BF16, DType::F16}) {
    std::vector<float> two = logits, fused = logits;
    kernels::cross_entropy_backward(two.data(), two.data(), stats.data(), targets.data(), 0.37f, N,
                                    V, v0);
    const uint16_t* want = kernels::to_lowp_in_place(t, two.data(), N, V);
    const uint16_t* got = kernels::cross_entropy_backward_lowp(t, fused.data(), stats.data(),
                                                               targets.data(), 0.37f, N, V, v0);
    ASSERT_EQ(static_cast<const void*>(got), static_cast<const void*>(fused.data()));
    for (int64_t i = 0; i < N * V; ++i) ASSERT_EQ(got[i], want[i]) << dtype_name(t) << " at " << i;
    // The ignored row is zero, the target's column holds p − 1 (negative) times dloss.
    for (int64_t v = 0; v < V; ++v) ASSERT_EQ(got[2 * V + v], 0);
    float g;
    kernels::from_lowp(t, &g, got + 0 * V + 0, 1);
    EXPECT_LT(g, 0.0f);
  }
}

// Every transposition, beta 0 and 1, alpha 1 or not, odd sizes, leading dimensions wider than the
// matrices: the 16-bit GEMM equals the exact product of the rounded operands up to fp32 summation.
TEST(Precision, LowPrecisionGemmMatchesTheExactProductOfRoundedOperands) {
  const int64_t M = 37, N = 29, K = 53, pad = 3;
  for (DType t : {DType::BF16, DType::F16})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.0f, 1.0f})
          for (float alpha : {1.0f, -0.37f}) {
            const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
            const int64_t lda = ac + pad, ldb = bc + pad, ldc = N + pad;
            const auto af = randn(ar * lda, 1), bf = randn(br * ldb, 2), c0 = randn(M * ldc, 3);
            std::vector<uint16_t> a(af.size()), b(bf.size());
            kernels::to_lowp(t, a.data(), af.data(), static_cast<int64_t>(a.size()));
            kernels::to_lowp(t, b.data(), bf.data(), static_cast<int64_t>(b.size()));
            std::vector<float> ar32(a.size()), br32(b.size());
            kernels::from_lowp(t, ar32.data(), a.data(), static_cast<int64_t>(a.size()));
            kernels::from_lowp(t, br32.data(), b.data(), static_cast<int64_t>(b.size()));
            std::vector<float> c = c0;
            kernels::gemm_lp(t, ta, tb, M, N, K, a.data(), lda, b.data(), ldb, beta, c.data(), ldc,
                             alpha);
            std::vector<double> want(M * N), got(M * N);
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < N; ++j) {
                double s = 0;
                for (int64_t k = 0; k < K; ++k)
                  s += double(ta ? ar32[k * lda + i] : ar32[i * lda + k]) *
                       double(tb ? br32[j * ldb + k] : br32[k * ldb + j]);
                want[i * N + j] = alpha * s + beta * c0[i * ldc + j],
                             got[i * N + j] = c[i * ldc + j];
              }
            EXPECT_LT(rel_err(got, want), 1e-6) << dtype_name(t) << " ta " << ta << " tb " << tb
                                                << " beta " << beta << " alpha " << alpha;
            for (int64_t i = 0; i < M; ++i)  // the padding between rows is left alone
              for (int64_t j = N; j < ldc; ++j) ASSERT_EQ(c[i * ldc + j], c0[i * ldc + j]);
          }
}

// A packed weight gives the exact product of the rounded operands as the plain GEMM does, at odd
// sizes with padded rows, and after the weight changes it gives the new product once repacked.
TEST(Precision, PackedWeightGemmMatchesTheExactProductAndRepacks) {
  // Odd sizes pad the packed layout in both dimensions. With dense operands (pad 0) oneDNN picks
  // its blocked kernels, and on CPUs with AVX-512 BF16 a weight stored by rows is then packed by
  // our own code; the second shape spans several of that layout's tiles.
  for (const auto [M, N, K, pad] :
       {std::array<int64_t, 4>{37, 29, 53, 3}, std::array<int64_t, 4>{19, 141, 167, 0}})
    for (int tb = 0; tb < 2; ++tb)
      for (bool acc : {false, true}) {
        const int64_t br = tb ? N : K, bc = tb ? K : N, lda = K + pad, ldb = bc + pad,
                      ldc = N + pad;
        kernels::PackedGemm g(tb, M, N, K, lda, ldb, ldc, acc);
        if (kernels::flash_attention_bf16_available() && !tb && pad == 0) {
          EXPECT_TRUE(g.packs_pairs());
        }
        EXPECT_TRUE(g.matches(tb, M, N, K, lda, ldb, ldc, acc));
        EXPECT_FALSE(g.matches(tb, M + 1, N, K, lda, ldb, ldc, acc));
        EXPECT_GE(g.bytes(), K * N * 2);
        const auto af = randn(M * lda, 21), c0 = randn(M * ldc, 23);
        std::vector<uint16_t> a(af.size()), b(br * ldb);
        kernels::to_lowp(DType::BF16, a.data(), af.data(), static_cast<int64_t>(a.size()));
        for (uint64_t seed : {24, 25}) {  // a weight, then its update
          const auto bf = randn(br * ldb, seed);
          kernels::to_lowp(DType::BF16, b.data(), bf.data(), static_cast<int64_t>(b.size()));
          g.pack(b.data());
          std::vector<float> c = c0;
          g.run(a.data(), c.data());
          std::vector<double> want(M * N), got(M * N);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              double sum = acc ? c0[i * ldc + j] : 0.0;
              for (int64_t k = 0; k < K; ++k)
                sum += double(bf16_to_float(a[i * lda + k])) *
                       double(bf16_to_float(tb ? b[j * ldb + k] : b[k * ldb + j]));
              want[i * N + j] = sum, got[i * N + j] = c[i * ldc + j];
            }
          EXPECT_LT(rel_err(got, want), 1e-6)
              << "M " << M << " tb " << tb << " acc " << acc << " seed " << seed;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = N; j < ldc; ++j) ASSERT_EQ(c[i * ldc + j], c0[i * ldc + j]);
        }
      }
}

// The mixed-precision model against fp32 on the same weights and batch. Its operands carry 8
// (bf16) or 11 (fp16) bits: each rounding is within 2^-9 or 2^-12 relative, and a gradient is a
// sum of many such products whose errors are independent, so the norm-wise error stays near the
// rounding unit times a small factor; the bounds below are a few times what is measured.
TEST(Precision, MixedPrecisionModelTracksFp32) {
  test::TinyModel m;
  const int64_t B = 3, T = 16, V = m.cfg.vocab_size;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> tok(B * T), tgt(B * T);
  for (auto& x : tok) x = id(rng);
  for (auto& x : tgt) x = id(rng);
  Llama ref(m.layout, B, T);
  ParamBuffer g32(m.layout);
  const float loss32 = ref.forward(m.params, tok.data(), tgt.data());
  std::vector<float> logits32(ref.logits(), ref.logits() + B * T * V);
  ref.backward(m.params, g32, 1.0f / (B * T));
  struct Case {
    Precision p;
    double logits, grads;
  };
  for (const Case c : {Case{Precision::bf16, 1e-2, 1.5e-2}, Case{Precision::fp16, 1.5e-3, 2e-3}}) {
    Llama lp(m.layout, B, T, {}, Recompute::none, c.p);
    ParamBuffer g(m.layout);
    const float loss = lp.forward(m.params, tok.data(), tgt.data());
    std::vector<float> logits(lp.logits(), lp.logits() + B * T * V);
    lp.backward(m.params, g, 1.0f / (B * T));
    const char* name = precision_name(c.p);
    EXPECT_NEAR(loss, loss32, 1e-2 * loss32) << name;
    EXPECT_LT(rel_err(logits, logits32), c.logits) << name;
    const auto ga = std::vector<float>(g.data(), g.data() + g.size());
    const auto gb = std::vector<float>(g32.data(), g32.data() + g32.size());
    const double e = rel_err(ga, gb);
    std::printf("%s: loss %.6f (fp32 %.6f), logits error %.2e, gradient error %.2e\n", name, loss,
                loss32, rel_err(logits, logits32), e);
    EXPECT_LT(e, c.grads) << name;
    EXPECT_GT(e, 0.0) << name << ": not rounded at all";
    // GEMM-only activations in 16 bits: less memory than fp32.
    EXPECT_LT(lp.activation_bytes(), ref.activation_bytes()) << name;
    // Recompute reproduces the same bits in mixed precision too.
    Llama full(m.layout, B, T, {}, Recompute::full, c.p);
    ParamBuffer gf(m.layout);
    full.forward(m.params, tok.data(), tgt.data());
    full.backward(m.params, gf, 1.0f / (B * T));
    EXPECT_EQ(0, std::memcmp(g.data(), gf.data(), 4 * g.size())) << name;
  }
  EXPECT_NE(test::error_of([] { parse_precision("fp8"); }).find("fp32, bf16 or fp16"),
            std::string::npos);
}

// The weights' 16-bit copy follows the master weights: a forward after they change uses them.
TEST(Precision, WeightCopyIsRefreshedAfterAnUpdate) {
  test::TinyModel m;
  const int64_t B = 2, T = 8;
  std::vector<int32_t> tok(B * T, 5), tgt(B * T, 7);
  Llama lp(m.layout, B, T, {}, Recompute::none, Precision::bf16);
  const float before = lp.forward(m.params, tok.data(), tgt.data());
  for (int64_t i = 0; i < m.params.size(); ++i) m.params.data()[i] *= 0.5f;
  const float after = lp.forward(m.params, tok.data(), tgt.data());
  Llama fresh(m.layout, B, T, {}, Recompute::none, Precision::bf16);
  EXPECT_NE(before, after);
  EXPECT_EQ(after, fresh.forward(m.params, tok.data(), tgt.data()));
}

// An fp16 backward whose gradients overflow (inf, then NaN after inf · 0) leaves nothing behind:
// the next backward equals a fresh model's, bit for bit. (Scratch that a kernel scales by 0
// instead of overwriting would keep the NaN.)
TEST(LossScale, AnOverflowedBackwardLeavesNoTrace) {
  test::TinyModel m;
  const int64_t B = 8, T = 16;
  std::mt19937 rng(1);
  std::vector<int32_t> tok(B * T), tgt(B * T);
  for (auto& x : tok) x = static_cast<int32_t>(rng() % m.cfg.vocab_size);
  for (auto& x : tgt) x = static_cast<int32_t>(rng() % m.cfg.vocab_size);
  auto non_finite = [](const ParamBuffer& g) {
    int64_t n = 0;
    for (int64_t i = 0; i < g.size(); ++i) n += !std::isfinite(g.data()[i]);
    return n;
  };
  Llama used(m.layout, B, T, {}, Recompute::none, Precision::fp16);
  ParamBuffer g(m.layout), want(m.layout);
  used.forward(m.params, tok.data(), tgt.data());
  used.backward(m.params, g, std::ldexp(1.0f, 30) / (B * T));
  ASSERT_GT(non_finite(g), 0) << "a scale of 2^30 must overflow fp16";
  g.zero();
  used.forward(m.params, tok.data(), tgt.data());
  used.backward(m.params, g, 1.0f / (B * T));
  EXPECT_EQ(non_finite(g), 0);
  Llama fresh(m.layout, B, T, {}, Recompute::none, Precision::fp16);
  fresh.forward(m.params, tok.data(), tgt.data());
  fresh.backward(m.params, want, 1.0f / (B * T));
  EXPECT_EQ(0, std::memcmp(g.data(), want.data(), 4 * g.size()));
}

TEST(LossScale, GrowsAfterCleanStepsHalvesAndSkipsOnOverflow) {
  LossScaler s(1024.0, 3);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_TRUE(s.update(true));  // the third clean step in a row: doubles
  EXPECT_EQ(s.scale(), 2048.0);
  EXPECT_TRUE(s.update(true));
  EXPECT_FALSE(s.update(false));  // overflow: skip, halve, count again from zero
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_EQ(s.clean_steps(), 0);
  EXPECT_EQ(s.skipped(), 1);
  for (int i = 0; i < 20; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 1.0);  // never below 1
  LossScaler copy(8.0, 3);
  s.update(true);
  copy.from_json(s.to_json(), "test");
  EXPECT_EQ(copy.scale(), s.scale());
  EXPECT_EQ(copy.clean_steps(), 1);
  EXPECT_NE(test::error_of([&] {
              copy.from_json({{"scale", -1.0}, {"clean_steps", 0}}, "t");
            }).find("out of range"),
            std::string::npos);
  LossScaler off;
  EXPECT_FALSE(off.enabled());
  EXPECT_TRUE(off.update(false));
  EXPECT_EQ(off.scale(), 1.0);
}

}  // namespace parallama
