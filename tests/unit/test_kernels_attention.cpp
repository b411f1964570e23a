// Rotary embedding and causal grouped-query attention against the scalar reference, finite
// differences, and the Hugging Face rotate_half convention.
#include <gtest/gtest.h>

#include "kernels/attention.h"
#include "kernels/reference.h"
#include "kernels/rope.h"
#include "test_util.h"

namespace parallama {
using namespace test;

TEST(Rope, HuggingFaceRotateHalfConvention) {
  // One head of D = 8 at position 1: element i pairs with i + 4 and turns by theta^(-2i/D).
  const int64_t D = 8, T = 2;
  std::vector<float> cs(T * D / 2), sn(T * D / 2), x(T * D, 0.0f);
  kernels::rope_table(cs.data(), sn.data(), T, D, 10000.0f);
  x[D + 1] = 1.0f;  // position 1, element 1
  kernels::rope_forward(x.data(), cs.data(), sn.data(), 1, T, 1, D, D);
  const double ang = 1.0 * std::pow(10000.0, -2.0 / 8.0);
  EXPECT_NEAR(x[D + 1], std::cos(ang), 1e-6);
  EXPECT_NEAR(x[D + 1 + 4], std::sin(ang), 1e-6);  // rotate_half partner, not the neighbour
  EXPECT_EQ(x[D + 2], 0.0f);
}

TEST(Rope, FastMatchesReferenceStridedAndInverts) {
  const int64_t B = 2, T = 5, NH = 3, D = 10, ld = NH * D + 7;
  auto x = randn(B * T * ld, 20);
  std::vector<float> cs(T * D / 2), sn(T * D / 2);
  kernels::rope_table(cs.data(), sn.data(), T, D, 500000.0f);
  auto y = x;
  kernels::rope_forward(y.data(), cs.data(), sn.data(), B, T, NH, D, ld);
  std::vector<double> dense(B * T * NH * D);
  for (int64_t r = 0; r < B * T; ++r)
    for (int64_t i = 0; i < NH * D; ++i) dense[r * NH * D + i] = x[r * ld + i];
  ref::rope_forward(dense.data(), B, T, NH, D, 500000.0f);
  std::vector<double> got(dense.size());
  for (int64_t r = 0; r < B * T; ++r) {
    for (int64_t i = 0; i < NH * D; ++i) got[r * NH * D + i] = y[r * ld + i];
    for (int64_t i = NH * D; i < ld; ++i)
      EXPECT_EQ(y[r * ld + i], x[r * ld + i]);  // padding untouched
  }
  EXPECT_LT(rel_err(got, dense), 1e-6);
  kernels::rope_backward(y.data(), cs.data(), sn.data(), B, T, NH, D, ld);  // a rotation's inverse
  EXPECT_LT(rel_err(y, x), 1e-6);
}

TEST(Rope, SixteenBitBackwardIsTheFp32BackwardRounded) {
  // Rows of [q (3 heads) | k (1 head) | v (1 head)]: q and k turned back as two rope_backward
  // calls turn them, v left as it is, and every row rounded exactly as to_lowp rounds it.
  const int64_t B = 2, T = 5, H = 3, KVH = 1, D = 10, ld = (H + 2 * KVH) * D;
  const auto d0 = randn(B * T * ld, 21);
  std::vector<float> cs(T * D / 2), sn(T * D / 2);
  kernels::rope_table(cs.data(), sn.data(), T, D, 500000.0f);
  auto want32 = d0, got32 = d0;
  kernels::rope_backward(want32.data(), cs.data(), sn.data(), B, T, H, D, ld);
  kernels::rope_backward(want32.data() + H * D, cs.data(), sn.data(), B, T, KVH, D, ld);
  for (DType t : {DType::BF16, DType::F16}) {
    got32 = d0;
    std::vector<uint16_t> want(B * T * ld), got(B * T * ld);
    kernels::to_lowp(t, want.data(), want32.data(), B * T * ld);
    kernels::rope_backward_lowp(t, got.data(), got32.data(), cs.data(), sn.data(), B, T, H, KVH, D,
                                ld);
    for (int64_t i = 0; i < B * T * ld; ++i) {
      ASSERT_EQ(got32[i], want32[i]) << i;
      ASSERT_EQ(got[i], want[i]) << i;
    }
  }
}

TEST(Rope, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t B = 1, T = 4, NH = 2, D = 6;
  auto x = to_double(randn(B * T * NH * D, 21)), r = to_double(randn(B * T * NH * D, 22));
  auto loss = [&] {
    auto y = x;
    ref::rope_forward(y.data(), B, T, NH, D, 10000.0f);
    return dot(y, r);
  };
  auto dx = r;
  ref::rope_backward(dx.data(), B, T, NH, D, 10000.0f);
  EXPECT_LT(rel_err(dx, numeric_grad(x, loss)), 1e-7);
}

// q, k, v packed per token as [q (H·D) | k (KVH·D) | v (KVH·D)], as the model keeps them.
struct Packed {
  int64_t B, T, H, KVH, D, ld;
  std::vector<float> qkv;
  std::vector<double> q, k, v;  // dense copies
  Packed(int64_t B_, int64_t T_, int64_t H_, int64_t KVH_, int64_t D_, uint32_t seed)
      : B(B_), T(T_), H(H_), KVH(KVH_), D(D_), ld((H_ + 2 * KVH_) * D_) {
    qkv = randn(B * T * ld, seed);
    q.resize(B * T * H * D), k.resize(B * T * KVH * D), v.resize(B * T * KVH * D);
    for (int64_t r = 0; r < B * T; ++r) {
      for (int64_t i = 0; i < H * D; ++i) q[r * H * D + i] = qkv[r * ld + i];
      for (int64_t i = 0; i < KVH * D; ++i) {
        k[r * KVH * D + i] = qkv[r * ld + H * D + i];
        v[r * KVH * D + i] = qkv[r * ld + (H + KVH) * D + i];
      }
    }
  }
  kernels::AttnDims dims() const { return {B, T, H, KVH, D, ld, ld}; }
  const float* qp() const { return qkv.data(); }
  const float* kp() const { return qkv.data() + H * D; }
  const float* vp() const { return qkv.data() + (H + KVH) * D; }
};

TEST(Attention, FastMatchesReferenceGroupedQuery) {
  Packed p(2, 7, 6, 2, 5, 30);
  const int64_t B = p.B, T = p.T, H = p.H, KVH = p.KVH, D = p.D;
  std::vector<float> out(B * T * H * D), att(B * H * T * T);
  kernels::attention_forward(out.data(), att.data(), p.qp(), p.kp(), p.vp(), p.dims());
  std::vector<double> outr(out.size()), attr(att.size());
  ref::attention_forward(outr.data(), attr.data(), p.q.data(), p.k.data(), p.v.data(), B, T, H, KVH,
                         D);
  EXPECT_LT(rel_err(out, outr), 1e-6);
  EXPECT_LT(rel_err(att, attr), 1e-6);
  // causal: no probability on future positions; rows sum to one
  for (int64_t row = 0; row < B * H * T; ++row) {
    const int64_t t = row % T;
    double s = 0;
    for (int64_t j = 0; j < T; ++j) {
      if (j > t) {
        EXPECT_EQ(att[row * T + j], 0.0f);
      }
      s += att[row * T + j];
    }
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  auto dout = randn(out.size(), 31);
  std::vector<float> dqkv(p.qkv.size(), 99.0f);
  kernels::attention_backward(dqkv.data(), dqkv.data() + H * D, dqkv.data() + (H + KVH) * D,
                              dout.data(), att.data(), p.qp(), p.kp(), p.vp(), p.dims());
  std::vector<double> dq(p.q.size()), dk(p.k.size()), dv(p.v.size()), doutd = to_double(dout);
  ref::attention_backward(dq.data(), dk.data(), dv.data(), doutd.data(), attr.data(), p.q.data(),
                          p.k.data(), p.v.data(), B, T, H, KVH, D);
  std::vector<double> gq(dq.size()), gk(dk.size()), gv(dv.size());
  for (int64_t r = 0; r < B * T; ++r) {
    for (int64_t i = 0; i < H * D; ++i) gq[r * H * D + i] = dqkv[r * p.ld + i];
    for (int64_t i = 0; i < KVH * D; ++i) {
      gk[r * KVH * D + i] = dqkv[r * p.ld + H * D + i];
      gv[r * KVH * D + i] = dqkv[r * p.ld + (H + KVH) * D + i];
    }
  }
  EXPECT_LT(rel_err(gq, dq), 1e-5);
  EXPECT_LT(rel_err(gk, dk), 1e-5);
  EXPECT_LT(rel_err(gv, dv), 1e-5);
}

TEST(Attention, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t B = 1, T = 4, H = 4, KVH = 2, D = 3;
  auto q = to_double(randn(B * T * H * D, 40)), k = to_double(randn(B * T * KVH * D, 41));
  auto v = to_double(randn(B * T * KVH * D, 42)), r = to_double(randn(B * T * H * D, 43));
  std::vector<double> out(B * T * H * D), att(B * H * T * T);
  auto loss = [&] {
    ref::attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), B, T, H, KVH, D);
    return dot(out, r);
  };
  loss();
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  ref::attention_backward(dq.data(), dk.data(), dv.data(), r.data(), att.data(), q.data(), k.data(),
                          v.data(), B, T, H, KVH, D);
  EXPECT_LT(rel_err(dq, numeric_grad(q, loss)), 1e-7);
  EXPECT_LT(rel_err(dk, numeric_grad(k, loss)), 1e-7);
  EXPECT_LT(rel_err(dv, numeric_grad(v, loss)), 1e-7);
}

}  // namespace parallama
