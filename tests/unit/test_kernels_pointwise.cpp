// SwiGLU, fused softmax cross-entropy and the optimizer updates.
#include <gtest/gtest.h>

#include "kernels/cross_entropy.h"
#include "kernels/optim.h"
#include "kernels/reference.h"
#include "kernels/swiglu.h"
#include "tensor/bf16.h"
#include "test_util.h"

namespace parallama {
using namespace test;

TEST(SwiGLU, FastMatchesReference) {
  const int64_t N = 7, F = 13;
  auto gu = randn(N * 2 * F, 50, 3.0f), dy = randn(N * F, 51);
  std::vector<float> y(N * F), dgu(N * 2 * F);
  kernels::swiglu_forward(y.data(), gu.data(), N, F);
  kernels::swiglu_backward(dgu.data(), dy.data(), gu.data(), N, F);
  auto gud = to_double(gu), dyd = to_double(dy);
  std::vector<double> yr(N * F), dgur(N * 2 * F);
  ref::swiglu_forward(yr.data(), gud.data(), N, F);
  ref::swiglu_backward(dgur.data(), dyd.data(), gud.data(), N, F);
  EXPECT_LT(rel_err(y, yr), 1e-6);
  EXPECT_LT(rel_err(dgu, dgur), 1e-6);
}

TEST(SwiGLU, SixteenBitOutputsAreTheFp32ResultsRounded) {
  // Rows wider than the stage on the stack and not a multiple of it, and a short one: the 16-bit
  // kernels give exactly to_lowp of the fp32 kernels' results.
  for (const int64_t F : {int64_t{700}, int64_t{37}})
    for (DType t : {DType::BF16, DType::F16}) {
      const int64_t N = 5;
      const auto gu = randn(N * 2 * F, 64, 3.0f), dout = randn(N * F, 65);
      std::vector<float> out(N * F), dgu(N * 2 * F);
      kernels::swiglu_forward(out.data(), gu.data(), N, F);
      kernels::swiglu_backward(dgu.data(), dout.data(), gu.data(), N, F);
      std::vector<uint16_t> want(N * 2 * F), got(N * 2 * F);
      kernels::to_lowp(t, want.data(), out.data(), N * F);
      kernels::swiglu_forward_lowp(t, got.data(), gu.data(), N, F);
      for (int64_t i = 0; i < N * F; ++i) ASSERT_EQ(got[i], want[i]) << "forward " << F << " " << i;
      kernels::to_lowp(t, want.data(), dgu.data(), N * 2 * F);
      kernels::swiglu_backward_lowp(t, got.data(), dout.data(), gu.data(), N, F);
      for (int64_t i = 0; i < N * 2 * F; ++i)
        ASSERT_EQ(got[i], want[i]) << "backward " << F << " " << i;
    }
}

TEST(SwiGLU, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t N = 3, F = 5;
  auto gu = to_double(randn(N * 2 * F, 52, 2.0f)), r = to_double(randn(N * F, 53));
  std::vector<double> y(N * F), dgu(N * 2 * F);
  auto loss = [&] {
    ref::swiglu_forward(y.data(), gu.data(), N, F);
    return dot(y, r);
  };
  ref::swiglu_backward(dgu.data(), r.data(), gu.data(), N, F);
  EXPECT_LT(rel_err(dgu, numeric_grad(gu, loss)), 1e-7);
}

TEST(CrossEntropy, FastMatchesReferenceWithIgnoreIndex) {
  const int64_t N = 9, V = 17;
  auto logits = randn(N * V, 60, 4.0f);
  std::vector<int32_t> tgt = {3, kernels::kIgnoreIndex, 16, 0, 5, 5, kernels::kIgnoreIndex, 9, 1};
  std::vector<float> loss(N), stats(2 * N);
  kernels::cross_entropy_forward(loss.data(), stats.data(), logits.data(), tgt.data(), N, V);
  auto ld = to_double(logits);
  std::vector<double> lr(N), dr(N * V);
  ref::cross_entropy_forward(lr.data(), ld.data(), tgt.data(), N, V);
  EXPECT_LT(rel_err(loss, lr), 1e-6);
  EXPECT_EQ(loss[1], 0.0f);
  // backward in place over the logits
  std::vector<float> d = logits;
  kernels::cross_entropy_backward(d.data(), d.data(), stats.data(), tgt.data(), 0.125f, N, V);
  ref::cross_entropy_backward(dr.data(), ld.data(), tgt.data(), 0.125, N, V);
  EXPECT_LT(rel_err(d, dr), 1e-6);
  for (int64_t v = 0; v < V; ++v) EXPECT_EQ(d[1 * V + v], 0.0f);  // ignored row: no gradient
}

TEST(CrossEntropy, ForwardLeavingExponentialsGivesTheSameLossAndGradient) {
  // The training forward writes exp(logit − max) over the logits, and its backward takes them
  // instead of exponentials of its own: the same loss and stats, and the gradient of the
  // double-precision reference, in fp32 and rounded to 16 bits.
  const int64_t N = 9, V = 37;
  auto logits = randn(N * V, 62, 4.0f);
  std::vector<int32_t> tgt = {3, kernels::kIgnoreIndex, 36, 0, 5, 5, kernels::kIgnoreIndex, 9, 1};
  std::vector<float> loss(N), stats(2 * N), loss2(N), stats2(2 * N);
  kernels::cross_entropy_forward(loss.data(), stats.data(), logits.data(), tgt.data(), N, V);
  std::vector<float> e = logits;
  kernels::cross_entropy_forward_exps(loss2.data(), stats2.data(), e.data(), tgt.data(), N, V);
  EXPECT_EQ(loss, loss2);
  EXPECT_EQ(stats, stats2);
  for (int64_t i = 0; i < N * V; ++i)
    ASSERT_NEAR(e[i], std::exp(double(logits[i]) - stats[2 * (i / V)]), 1e-6) << i;
  auto ld = to_double(logits);
  std::vector<double> lr(N), dr(N * V);
  ref::cross_entropy_forward(lr.data(), ld.data(), tgt.data(), N, V);
  ref::cross_entropy_backward(dr.data(), ld.data(), tgt.data(), 0.125, N, V);
  std::vector<float> d = e;
  kernels::cross_entropy_backward(d.data(), d.data(), stats2.data(), tgt.data(), 0.125f, N, V, 0,
                                  true);
  EXPECT_LT(rel_err(d, dr), 1e-6);
  for (int64_t v = 0; v < V; ++v) EXPECT_EQ(d[1 * V + v], 0.0f);
  // 16 bits: each value is the fp32 gradient of the exponentials' path, rounded
  std::vector<float> f = e;
  const uint16_t* h = kernels::cross_entropy_backward_lowp(DType::BF16, f.data(), stats2.data(),
                                                           tgt.data(), 0.125f, N, V, 0, true);
  std::vector<uint16_t> want(N * V);
  kernels::to_lowp(DType::BF16, want.data(), d.data(), N * V);
  for (int64_t i = 0; i < N * V; ++i) ASSERT_EQ(h[i], want[i]) << i;
}

TEST(CrossEntropy, Bf16TrainingForwardGivesTheUnscaledGradientInOneVisit) {
  // Each row's loss, stats and bf16 softmax − onehot in one visit equal the two-call path with
  // dloss = 1, bit for bit; rows wider than the rounding's stages, ignored rows, and enough rows
  // for several parallel waves of the in-place narrowing (row 0 apart).
  const int64_t N = 21, V = 2500;
  auto logits = randn(N * V, 63, 5.0f);
  std::vector<int32_t> tgt(N);
  for (int64_t n = 0; n < N; ++n) tgt[n] = n % 7 == 3 ? kernels::kIgnoreIndex : int32_t(n * 97 % V);
  tgt[0] = V - 1;
  std::vector<float> loss(N), stats(2 * N), loss2(N), stats2(2 * N);
  std::vector<float> e = logits, f = logits;
  kernels::cross_entropy_forward_exps(loss.data(), stats.data(), e.data(), tgt.data(), N, V);
  const uint16_t* want = kernels::cross_entropy_backward_lowp(DType::BF16, e.data(), stats.data(),
                                                              tgt.data(), 1.0f, N, V, 0, true);
  const uint16_t* got = kernels::cross_entropy_forward_grad_lowp(
      DType::BF16, loss2.data(), stats2.data(), f.data(), tgt.data(), N, V);
  EXPECT_EQ(loss, loss2);
  EXPECT_EQ(stats, stats2);
  for (int64_t i = 0; i < N * V; ++i) ASSERT_EQ(got[i], want[i]) << i;
  // and against the double-precision reference: within bf16's rounding
  auto ld = to_double(logits);
  std::vector<double> lr(N), dr(N * V);
  ref::cross_entropy_forward(lr.data(), ld.data(), tgt.data(), N, V);
  ref::cross_entropy_backward(dr.data(), ld.data(), tgt.data(), 1.0, N, V);
  for (int64_t n = 0; n < N; ++n) EXPECT_NEAR(loss2[n], lr[n], 1e-5 * (1 + lr[n])) << n;
  for (int64_t i = 0; i < N * V; ++i)
    ASSERT_NEAR(bf16_to_float(got[i]), dr[i], std::ldexp(std::abs(dr[i]), -8) + 1e-12) << i;
}

TEST(CrossEntropy, StableForHugeLogits) {
  const int64_t N = 2, V = 5;
  std::vector<float> logits = {1000, 999, 998, -1000, 0, -3e4f, -3e4f + 1, -3e4f, -3e4f, -3e4f};
  std::vector<int32_t> tgt = {0, 1};
  std::vector<float> loss(N), stats(2 * N);
  kernels::cross_entropy_forward(loss.data(), stats.data(), logits.data(), tgt.data(), N, V);
  // log-softmax is shift invariant: the same as logits {0, -1, -2, -2000, -1000}
  const double expect0 = std::log(1 + std::exp(-1.0) + std::exp(-2.0));
  EXPECT_NEAR(loss[0], expect0, 1e-5);
  EXPECT_NEAR(loss[1], std::log(1 + 4 * std::exp(-1.0)), 1e-3);
  std::vector<float> d = logits;
  kernels::cross_entropy_backward(d.data(), d.data(), stats.data(), tgt.data(), 1.0f, N, V);
  for (float x : d) EXPECT_TRUE(std::isfinite(x));
}

TEST(CrossEntropy, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t N = 3, V = 6;
  auto logits = to_double(randn(N * V, 61, 2.0f));
  std::vector<int32_t> tgt = {2, kernels::kIgnoreIndex, 5};
  std::vector<double> loss(N), d(N * V);
  auto f = [&] {
    ref::cross_entropy_forward(loss.data(), logits.data(), tgt.data(), N, V);
    return 0.5 * (loss[0] + loss[1] + loss[2]);
  };
  ref::cross_entropy_backward(d.data(), logits.data(), tgt.data(), 0.5, N, V);
  EXPECT_LT(rel_err(d, numeric_grad(logits, f)), 1e-7);
}

TEST(AdamW, FastMatchesReferenceOverSteps) {
  const int64_t n = 1001;
  auto p = randn(n, 70), p2 = p;
  std::vector<float> m(n, 0), v(n, 0), m2(n, 0), v2(n, 0);
  for (int step = 1; step <= 3; ++step) {
    auto g = randn(n, 71 + step);
    kernels::adamw_update(p.data(), m.data(), v.data(), g.data(), n,
                          {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step});
    ref::adamw_update(p2.data(), m2.data(), v2.data(), g.data(), n, 1e-2, 0.9, 0.95, 1e-8, 0.1,
                      step);
  }
  EXPECT_LT(rel_err(p, p2), 1e-6);
  EXPECT_LT(rel_err(m, m2), 1e-6);
  EXPECT_LT(rel_err(v, v2), 1e-6);
}

TEST(AdamW, FirstStepIsSignStepAndDecayIsDecoupled) {
  // After one step m̂ = g and v̂ = g², so the update is lr·g/(|g|+eps) ≈ lr·sign(g), whatever |g|;
  // decoupled decay shrinks p by lr·wd·p independently of the gradient.
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, g = {1e-3f, -50.0f, 7.0f}, m(3, 0), v(3, 0);
  kernels::adamw_update(p.data(), m.data(), v.data(), g.data(), 3,
                        {0.1f, 0.9f, 0.999f, 1e-8f, 0.5f, 1});
  EXPECT_NEAR(p[0], 1.0f * (1 - 0.05f) - 0.1f, 1e-5);
  EXPECT_NEAR(p[1], -2.0f * (1 - 0.05f) + 0.1f, 1e-5);
  EXPECT_NEAR(p[2], 0.5f * (1 - 0.05f) - 0.1f, 1e-5);
}

TEST(SGD, MomentumNesterovAndDecayMatchReference) {
  const int64_t n = 777;
  for (bool nesterov : {false, true}) {
    auto p = randn(n, 80), p2 = p;
    std::vector<float> b(n, 0), b2(n, 0);
    for (int step = 1; step <= 4; ++step) {
      auto g = randn(n, 81 + step);
      kernels::sgd_update(p.data(), b.data(), g.data(), n,
                          {0.05f, 0.9f, 0.1f, 0.01f, nesterov, step == 1});
      ref::sgd_update(p2.data(), b2.data(), g.data(), n, 0.05, 0.9, 0.1, 0.01, nesterov, step == 1);
    }
    EXPECT_LT(rel_err(p, p2), 1e-6);
    EXPECT_LT(rel_err(b, b2), 1e-6);
  }
  // Plain SGD by hand: p ← p − lr·(g + wd·p)
  std::vector<float> p = {1.0f}, b = {0.0f}, g = {2.0f};
  kernels::sgd_update(p.data(), b.data(), g.data(), 1, {0.1f, 0.0f, 0.0f, 0.5f, false, true});
  EXPECT_NEAR(p[0], 1.0f - 0.1f * (2.0f + 0.5f), 1e-6);
}

}  // namespace parallama
