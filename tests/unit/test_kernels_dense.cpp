// matmul, RMSNorm and embedding: fast kernel vs scalar reference on odd sizes, and the reference
// backward vs finite differences of the reference forward (double precision).
#include <gtest/gtest.h>

#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/reference.h"
#include "kernels/rmsnorm.h"
#include "test_util.h"

namespace parallama {
using namespace test;

TEST(Linear, FastMatchesReference) {
  const int64_t N = 7, I = 13, O = 11;
  auto x = randn(N * I, 1), w = randn(O * I, 2), dy = randn(N * O, 3);
  std::vector<float> y(N * O), dx(N * I), dw(O * I, 0.5f);
  kernels::linear_forward(y.data(), x.data(), w.data(), N, I, O);
  kernels::linear_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), N, I, O);
  auto xd = to_double(x), wd = to_double(w), dyd = to_double(dy);
  std::vector<double> yr(N * O), dxr(N * I), dwr(O * I, 0.5);
  ref::linear_forward(yr.data(), xd.data(), wd.data(), N, I, O);
  ref::linear_backward(dxr.data(), dwr.data(), dyd.data(), xd.data(), wd.data(), N, I, O);
  EXPECT_LT(rel_err(y, yr), 1e-6);
  EXPECT_LT(rel_err(dx, dxr), 1e-6);
  EXPECT_LT(rel_err(dw, dwr), 1e-6);  // accumulated onto 0.5, not overwritten
  // accumulate_dx adds instead of assigning
  std::vector<float> dx2 = dx;
  kernels::linear_backward(dx2.data(), nullptr, dy.data(), x.data(), w.data(), N, I, O, true);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(dx2[i], 2 * dx[i], 1e-5);
}

TEST(Linear, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t N = 3, I = 5, O = 4;
  auto x = to_double(randn(N * I, 4)), w = to_double(randn(O * I, 5)),
       r = to_double(randn(N * O, 6));
  std::vector<double> y(N * O), dx(N * I), dw(O * I, 0.0);
  auto loss = [&] {
    ref::linear_forward(y.data(), x.data(), w.data(), N, I, O);
    return dot(y, r);
  };
  ref::linear_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), N, I, O);
  EXPECT_LT(rel_err(dx, numeric_grad(x, loss)), 1e-7);
  EXPECT_LT(rel_err(dw, numeric_grad(w, loss)), 1e-7);
}

TEST(RMSNorm, FastMatchesReference) {
  const int64_t N = 9, C = 37;
  auto x = randn(N * C, 7, 3.0f), w = randn(C, 8), dy = randn(N * C, 9);
  std::vector<float> y(N * C), rstd(N), dx(N * C), dw(C, 0.25f);
  kernels::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
  kernels::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
  auto xd = to_double(x), wd = to_double(w), dyd = to_double(dy);
  std::vector<double> yr(N * C), rr(N), dxr(N * C), dwr(C, 0.25);
  ref::rmsnorm_forward(yr.data(), rr.data(), xd.data(), wd.data(), N, C, 1e-5);
  ref::rmsnorm_backward(dxr.data(), dwr.data(), dyd.data(), xd.data(), wd.data(), rr.data(), N, C);
  EXPECT_LT(rel_err(y, yr), 1e-6);
  EXPECT_LT(rel_err(rstd, rr), 1e-6);
  EXPECT_LT(rel_err(dx, dxr), 1e-5);
  EXPECT_LT(rel_err(dw, dwr), 1e-5);
  std::vector<float> dx2 = dx, dw2(C, 0.0f);
  kernels::rmsnorm_backward(dx2.data(), dw2.data(), dy.data(), x.data(), w.data(), rstd.data(), N,
                            C, true);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(dx2[i], 2 * dx[i], 1e-4);
}

TEST(RMSNorm, SixteenBitOutputIsTheFp32ResultRounded) {
  // Rows wider than the stage on the stack and not a multiple of it, and a short one: the 16-bit
  // kernel gives exactly to_lowp of the fp32 kernel's output, and the same 1 / rms.
  for (const int64_t C : {int64_t{1100}, int64_t{37}})
    for (DType t : {DType::BF16, DType::F16}) {
      const int64_t N = 5;
      const auto x = randn(N * C, 10, 3.0f), w = randn(C, 11);
      std::vector<float> y(N * C), rstd(N), rstd16(N);
      kernels::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
      std::vector<uint16_t> want(N * C), got(N * C);
      kernels::to_lowp(t, want.data(), y.data(), N * C);
      kernels::rmsnorm_forward_lowp(t, got.data(), rstd16.data(), x.data(), w.data(), N, C, 1e-5f);
      for (int64_t i = 0; i < N * C; ++i) ASSERT_EQ(got[i], want[i]) << C << " " << i;
      for (int64_t n = 0; n < N; ++n) ASSERT_EQ(rstd16[n], rstd[n]) << C << " " << n;
    }
}

TEST(RMSNorm, SixteenBitBackwardRoundsTheFinalInputGradient) {
  // The same dx and dw as the fp32 backward, set or accumulated, and dx16 exactly to_lowp of the
  // final dx.
  const int64_t N = 6, C = 37;
  const auto x = randn(N * C, 12, 3.0f), w = randn(C, 13), dy = randn(N * C, 14),
             dx0 = randn(N * C, 15);
  std::vector<float> y(N * C), rstd(N);
  kernels::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
  for (bool acc : {false, true})
    for (DType t : {DType::BF16, DType::F16}) {
      std::vector<float> dx = dx0, dw(C, 0.25f), dx2 = dx0, dw2(C, 0.25f);
      kernels::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N,
                                C, acc);
      std::vector<uint16_t> got(N * C), want(N * C);
      kernels::rmsnorm_backward_lowp(t, got.data(), dx2.data(), dw2.data(), dy.data(), x.data(),
                                     w.data(), rstd.data(), N, C, acc);
      kernels::to_lowp(t, want.data(), dx.data(), N * C);
      for (int64_t i = 0; i < N * C; ++i) {
        ASSERT_EQ(dx2[i], dx[i]) << acc << " " << i;
        ASSERT_EQ(got[i], want[i]) << acc << " " << i;
      }
      for (int64_t c = 0; c < C; ++c) ASSERT_EQ(dw2[c], dw[c]) << acc << " " << c;
    }
}

TEST(RMSNorm, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t N = 3, C = 7;
  auto x = to_double(randn(N * C, 10)), w = to_double(randn(C, 11)),
       r = to_double(randn(N * C, 12));
  std::vector<double> y(N * C), rstd(N), dx(N * C), dw(C, 0.0);
  auto loss = [&] {
    ref::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
    return dot(y, r);
  };
  loss();
  ref::rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, C);
  EXPECT_LT(rel_err(dx, numeric_grad(x, loss)), 1e-7);
  EXPECT_LT(rel_err(dw, numeric_grad(w, loss)), 1e-7);
}

TEST(Embedding, FastMatchesReferenceWithRepeatedTokens) {
  const int64_t V = 11, C = 13, N = 9;
  std::vector<int32_t> tok = {3, 0, 10, 3, 3, 7, 0, 1, 10};
  auto table = randn(V * C, 13), dy = randn(N * C, 14);
  std::vector<float> y(N * C), dt(V * C, 1.0f);
  kernels::embedding_forward(y.data(), tok.data(), table.data(), N, C);
  kernels::embedding_backward(dt.data(), dy.data(), tok.data(), N, C);
  std::vector<float> yr(N * C), dtr(V * C, 1.0f);
  ref::embedding_forward(yr.data(), tok.data(), table.data(), N, C);
  ref::embedding_backward(dtr.data(), dy.data(), tok.data(), N, C);
  EXPECT_EQ(y, yr);
  EXPECT_LT(rel_err(dt, dtr), 1e-7);
  // row 3 was used three times, row 5 never
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_NEAR(dt[3 * C + c], 1.0f + dy[0 * C + c] + dy[3 * C + c] + dy[4 * C + c], 1e-5);
    EXPECT_EQ(dt[5 * C + c], 1.0f);
  }
}

}  // namespace parallama
