// Block-wise (online softmax) causal grouped-query attention against a scalar double-precision
// reference, against the kernels that keep the probabilities, and across thread counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <string>

#include "kernels/attention.h"
#include "kernels/flash_attention.h"
#include "kernels/reference.h"
#include "tensor/bf16.h"
#include "test_util.h"

namespace parallama {
using namespace test;

namespace {

struct AttnShape {
  int64_t B, T, H, KVH, D;
  bool packed;          // q, k, v interleaved per token (as the model keeps them) or apart
  float qscale = 1.0f;  // larger → peakier softmax, the running max moves more
};

std::string name(const AttnShape& s) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " H=" + std::to_string(s.H) +
         " KVH=" + std::to_string(s.KVH) + " D=" + std::to_string(s.D) +
         (s.packed ? " packed" : " apart") + " qscale=" + std::to_string(s.qscale);
}

// q, k, v in one float buffer with padding between tokens; an equally laid out buffer takes
// dq, dk, dv. Dense double copies feed the reference.
struct Inputs {
  AttnShape s;
  int64_t ldq, ldkv, qoff, koff, voff;
  std::vector<float> buf;
  std::vector<double> q, k, v;  // dense (B, T, H, D) and (B, T, KVH, D)

  Inputs(const AttnShape& s_, uint32_t seed) : s(s_) {
    const int64_t BT = s.B * s.T, HD = s.H * s.D, KD = s.KVH * s.D;
    if (s.packed) {
      ldq = ldkv = HD + 2 * KD + 3;
      qoff = 0, koff = HD, voff = HD + KD;
      buf = randn(BT * ldq, seed);
    } else {
      ldq = HD + 5, ldkv = KD + 2;
      qoff = 0, koff = BT * ldq, voff = koff + BT * ldkv;
      buf = randn(BT * (ldq + 2 * ldkv), seed);
    }
    for (int64_t r = 0; r < BT; ++r)
      for (int64_t i = 0; i < HD; ++i) buf[qoff + r * ldq + i] *= s.qscale;
    q = gather(buf, qoff, ldq, HD);
    k = gather(buf, koff, ldkv, KD);
    v = gather(buf, voff, ldkv, KD);
  }
  std::vector<double> gather(const std::vector<float>& b, int64_t off, int64_t ld,
                             int64_t width) const {
    std::vector<double> dense(s.B * s.T * width);
    for (int64_t r = 0; r < s.B * s.T; ++r)
      for (int64_t i = 0; i < width; ++i) dense[r * width + i] = b[off + r * ld + i];
    return dense;
  }
  // Entries of the buffer that belong to no q, k or v element.
  std::vector<char> padding() const {
    std::vector<char> pad(buf.size(), 1);
    for (int64_t r = 0; r < s.B * s.T; ++r) {
      for (int64_t i = 0; i < s.H * s.D; ++i) pad[qoff + r * ldq + i] = 0;
      for (int64_t i = 0; i < s.KVH * s.D; ++i)
        pad[koff + r * ldkv + i] = pad[voff + r * ldkv + i] = 0;
    }
    return pad;
  }
  kernels::AttnDims dims() const { return {s.B, s.T, s.H, s.KVH, s.D, ldq, ldkv}; }
  const float* qp() const { return buf.data() + qoff; }
  const float* kp() const { return buf.data() + koff; }
  const float* vp() const { return buf.data() + voff; }
};

struct Result {
  std::vector<double> out, lse, dq, dk, dv;
};

// Straight from the definition, in double: p_tj = softmax_{j ≤ t}(q_t·k_j / √D), out_t = Σ p v,
// and its gradient through the softmax.
Result reference(const Inputs& in, const std::vector<double>& dout) {
  const auto [B, T, H, KVH, D, packed, qscale] = in.s;
  const int64_t group = H / KVH;
  const double scale = 1.0 / std::sqrt(double(D));
  Result r;
  r.out.assign(B * T * H * D, 0.0), r.lse.assign(B * H * T, 0.0);
  r.dq.assign(in.q.size(), 0.0), r.dk.assign(in.k.size(), 0.0), r.dv.assign(in.v.size(), 0.0);
  std::vector<double> p(T), dp(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t qi = ((b * T + t) * H + h) * D, kvh = h / group;
        auto kv = [&](int64_t j) { return ((b * T + j) * KVH + kvh) * D; };
        double mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          double s = 0;
          for (int64_t x = 0; x < D; ++x) s += in.q[qi + x] * in.k[kv(j) + x];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        double z = 0;
        for (int64_t j = 0; j <= t; ++j) z += std::exp(p[j] - mx);
        r.lse[(b * H + h) * T + t] = mx + std::log(z);
        double delta = 0;
        for (int64_t j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - mx) / z;
          dp[j] = 0;
          for (int64_t x = 0; x < D; ++x) {
            r.out[qi + x] += p[j] * in.v[kv(j) + x];
            dp[j] += dout[qi + x] * in.v[kv(j) + x];
          }
          delta += p[j] * dp[j];
        }
        for (int64_t j = 0; j <= t; ++j) {
          const double ds = p[j] * (dp[j] - delta) * scale;
          for (int64_t x = 0; x < D; ++x) {
            r.dq[qi + x] += ds * in.k[kv(j) + x];
            r.dk[kv(j) + x] += ds * in.q[qi + x];
            r.dv[kv(j) + x] += p[j] * dout[qi + x];
          }
        }
      }
  return r;
}

struct Flash {
  std::vector<float> out, lse, grad;  // grad laid out like Inputs::buf
};

Flash run_flash(const Inputs& in, const std::vector<float>& dout, bool bf16 = false) {
  const auto d = in.dims();
  Flash f;
  f.out.assign(in.s.B * in.s.T * in.s.H * in.s.D, 0.0f);
  f.lse.assign(in.s.B * in.s.H * in.s.T, 0.0f);
  f.grad.assign(in.buf.size(), 7.0f);  // overwritten where it belongs, untouched elsewhere
  auto forward = bf16 ? kernels::flash_attention_forward_bf16 : kernels::flash_attention_forward;
  auto backward = bf16 ? kernels::flash_attention_backward_bf16 : kernels::flash_attention_backward;
  kernels::AttnScratch scratch;
  forward(f.out.data(), f.lse.data(), in.qp(), in.kp(), in.vp(), d, scratch);
  backward(f.grad.data() + in.qoff, f.grad.data() + in.koff, f.grad.data() + in.voff, dout.data(),
           f.out.data(), f.lse.data(), in.qp(), in.kp(), in.vp(), d, scratch);
  return f;
}

// rel_err, except against an exact zero (T = 1: one key, constant softmax, so dq = dk = 0),
// where only rounding noise is left on both sides: then the absolute ||got − want||.
template <class A, class B>
double grad_err(const A& got, const B& want) {
  double n = 0;
  for (const auto w : want) n += double(w) * double(w);
  if (std::sqrt(n) >= 1e-6) return rel_err(got, want);
  double e = 0;
  for (size_t i = 0; i < want.size(); ++i)
    e += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
  return std::sqrt(e);
}

const std::vector<AttnShape> kShapes = {
    {2, 37, 6, 2, 12, true},        {2, 37, 6, 3, 20, false}, {1, 1, 4, 2, 8, true},
    {3, 1, 2, 1, 5, false},         {1, 64, 2, 2, 16, true},  {1, 65, 4, 1, 9, false},
    {2, 150, 4, 2, 12, true},       {1, 200, 3, 3, 7, false}, {1, 130, 4, 2, 16, true, 4.0f},
    {2, 70, 2, 1, 20, false, 3.0f},
};

}  // namespace

TEST(FlashAttention, TestReferenceMatchesLibraryReference) {
  Inputs in({2, 9, 4, 2, 5, false}, 50);
  const auto dout = to_double(randn(2 * 9 * 4 * 5, 51));
  const Result r = reference(in, dout);
  std::vector<double> out(r.out.size()), att(2 * 4 * 9 * 9);
  ref::attention_forward(out.data(), att.data(), in.q.data(), in.k.data(), in.v.data(), 2, 9, 4, 2,
                         5);
  std::vector<double> dq(r.dq.size()), dk(r.dk.size()), dv(r.dv.size());
  ref::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), att.data(), in.q.data(),
                          in.k.data(), in.v.data(), 2, 9, 4, 2, 5);
  EXPECT_LT(rel_err(r.out, out), 1e-12);
  EXPECT_LT(rel_err(r.dq, dq), 1e-12);
  EXPECT_LT(rel_err(r.dk, dk), 1e-12);
  EXPECT_LT(rel_err(r.dv, dv), 1e-12);
}

TEST(FlashAttention, MatchesDoubleReference) {
  uint32_t seed = 100;
  for (const AttnShape& s : kShapes) {
    SCOPED_TRACE(name(s));
    Inputs in(s, seed++);
    const auto dout = randn(s.B * s.T * s.H * s.D, seed++);
    const Flash f = run_flash(in, dout);
    const Result r = reference(in, to_double(dout));
    EXPECT_LT(rel_err(f.out, r.out), 1e-5);
    double lse_err = 0;
    for (size_t i = 0; i < r.lse.size(); ++i)
      lse_err = std::max(lse_err, std::abs(f.lse[i] - r.lse[i]) / (1.0 + std::abs(r.lse[i])));
    EXPECT_LT(lse_err, 1e-5);
    const int64_t HD = s.H * s.D, KD = s.KVH * s.D;
    EXPECT_LT(grad_err(in.gather(f.grad, in.qoff, in.ldq, HD), r.dq), 1e-4);
    EXPECT_LT(grad_err(in.gather(f.grad, in.koff, in.ldkv, KD), r.dk), 1e-4);
    EXPECT_LT(grad_err(in.gather(f.grad, in.voff, in.ldkv, KD), r.dv), 1e-4);
    const auto pad = in.padding();
    int64_t touched = 0;
    for (size_t i = 0; i < pad.size(); ++i) touched += pad[i] && f.grad[i] != 7.0f;
    EXPECT_EQ(touched, 0);
  }
}

TEST(FlashAttention, MatchesProbabilityKeepingKernels) {
  uint32_t seed = 200;
  for (const AttnShape& s : kShapes) {
    SCOPED_TRACE(name(s));
    Inputs in(s, seed++);
    const auto dout = randn(s.B * s.T * s.H * s.D, seed++);
    const Flash f = run_flash(in, dout);
    const auto d = in.dims();
    std::vector<float> out(f.out.size()), att(s.B * s.H * s.T * s.T), grad(in.buf.size(), 7.0f);
    kernels::attention_forward(out.data(), att.data(), in.qp(), in.kp(), in.vp(), d);
    kernels::attention_backward(grad.data() + in.qoff, grad.data() + in.koff, grad.data() + in.voff,
                                dout.data(), att.data(), in.qp(), in.kp(), in.vp(), d);
    EXPECT_LT(rel_err(f.out, out), 1e-5);
    const int64_t HD = s.H * s.D, KD = s.KVH * s.D;
    EXPECT_LT(
        grad_err(in.gather(f.grad, in.qoff, in.ldq, HD), in.gather(grad, in.qoff, in.ldq, HD)),
        1e-4);
    EXPECT_LT(
        grad_err(in.gather(f.grad, in.koff, in.ldkv, KD), in.gather(grad, in.koff, in.ldkv, KD)),
        1e-4);
    EXPECT_LT(
        grad_err(in.gather(f.grad, in.voff, in.ldkv, KD), in.gather(grad, in.voff, in.ldkv, KD)),
        1e-4);
  }
}

TEST(FlashAttention, ForwardWithoutLogSumExp) {
  Inputs in({2, 70, 4, 2, 12, true}, 300);
  const auto d = in.dims();
  std::vector<float> a(2 * 70 * 4 * 12), b(a.size()), lse(2 * 4 * 70);
  kernels::AttnScratch scratch;
  kernels::flash_attention_forward(a.data(), lse.data(), in.qp(), in.kp(), in.vp(), d, scratch);
  kernels::flash_attention_forward(b.data(), nullptr, in.qp(), in.kp(), in.vp(), d, scratch);
  EXPECT_EQ(a, b);
}

// With a KV cache: the queries of positions P .. P+T-1 against the keys 0 .. P+T-1 give the last
// T rows of the whole sequence's attention (the double reference), for splits on and off the
// kernel's 64-key blocks, one query (a decode step) and many (a prefill after a prefix).
TEST(FlashAttention, QueriesAfterAPastMatchTheWholeSequence) {
  uint32_t seed = 500;
  for (const AttnShape& s : {AttnShape{1, 150, 6, 2, 12, true}, AttnShape{1, 37, 4, 4, 9, false},
                             AttnShape{1, 200, 3, 1, 16, true, 3.0f}})
    for (int64_t P : {int64_t{0}, int64_t{1}, int64_t{36}, int64_t{63}, int64_t{64}, int64_t{65},
                      int64_t{129}, s.T - 1}) {
      if (P >= s.T) continue;
      SCOPED_TRACE(name(s) + " past=" + std::to_string(P));
      Inputs in(s, seed++);
      const Result r = reference(in, std::vector<double>(s.B * s.T * s.H * s.D, 0.0));
      kernels::AttnDims d = in.dims();
      d.T = s.T - P, d.past = P;
      const int64_t HD = s.H * s.D;
      std::vector<float> out(d.T * HD), lse(s.H * d.T);
      kernels::AttnScratch scratch;
      kernels::flash_attention_forward(out.data(), lse.data(), in.qp() + P * in.ldq, in.kp(),
                                       in.vp(), d, scratch);
      const std::vector<double> want(r.out.begin() + P * HD, r.out.end());
      EXPECT_LT(rel_err(out, want), 1e-5);
      double lse_err = 0;
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t t = 0; t < d.T; ++t) {
          const double w = r.lse[h * s.T + P + t];
          lse_err = std::max(lse_err, std::abs(lse[h * d.T + t] - w) / (1.0 + std::abs(w)));
        }
      EXPECT_LT(lse_err, 1e-5);
    }
}

TEST(FlashAttention, SameBitsForAnyThreadCount) {
  Inputs in({2, 150, 6, 3, 20, true}, 400);
  const auto dout = randn(2 * 150 * 6 * 20, 401);
  const int keep = omp_get_max_threads();
  for (bool bf16 : {false, true}) {
    if (bf16 && !kernels::flash_attention_bf16_available()) continue;
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    omp_set_num_threads(1);
    const Flash one = run_flash(in, dout, bf16);
    omp_set_num_threads(3);
    const Flash three = run_flash(in, dout, bf16);
    const Flash again = run_flash(in, dout, bf16);
    omp_set_num_threads(keep);
    EXPECT_EQ(one.out, three.out);
    EXPECT_EQ(one.lse, three.lse);
    EXPECT_EQ(one.grad, three.grad);
    EXPECT_EQ(three.grad, again.grad);
  }
}

// The bf16 kernels against the double reference of the same inputs rounded to bf16: what is
// left is the rounding of each tile's probabilities and score gradients to bf16 (relative 2⁻⁹
// each) before their products, summed in fp32. The scores, and so lse, come from exact products
// of bf16 values summed in fp32, as in fp32.
TEST(FlashAttention, Bf16MatchesDoubleReferenceOfRoundedInputs) {
  if (!kernels::flash_attention_bf16_available())
    GTEST_SKIP() << "this CPU has no AVX-512 BF16; the model uses the fp32 tiles";
  uint32_t seed = 600;
  double worst_out = 0, worst_grad = 0;
  for (const AttnShape& s : kShapes) {
    SCOPED_TRACE(name(s));
    Inputs in(s, seed++);
    for (float& x : in.buf) x = bf16_to_float(float_to_bf16(x));
    const int64_t HD = s.H * s.D, KD = s.KVH * s.D;
    in.q = in.gather(in.buf, in.qoff, in.ldq, HD);
    in.k = in.gather(in.buf, in.koff, in.ldkv, KD);
    in.v = in.gather(in.buf, in.voff, in.ldkv, KD);
    auto dout = randn(s.B * s.T * s.H * s.D, seed++);
    for (float& x : dout) x = bf16_to_float(float_to_bf16(x));
    const Flash f = run_flash(in, dout, true);
    const Result r = reference(in, to_double(dout));
    const double out_err = rel_err(f.out, r.out);
    EXPECT_LT(out_err, 3e-3);
    double lse_err = 0;
    for (size_t i = 0; i < r.lse.size(); ++i)
      lse_err = std::max(lse_err, std::abs(f.lse[i] - r.lse[i]) / (1.0 + std::abs(r.lse[i])));
    EXPECT_LT(lse_err, 1e-5);
    const double gq = grad_err(in.gather(f.grad, in.qoff, in.ldq, HD), r.dq);
    const double gk = grad_err(in.gather(f.grad, in.koff, in.ldkv, KD), r.dk);
    const double gv = grad_err(in.gather(f.grad, in.voff, in.ldkv, KD), r.dv);
    EXPECT_LT(gq, 6e-3);
    EXPECT_LT(gk, 6e-3);
    EXPECT_LT(gv, 6e-3);
    worst_out = std::max(worst_out, out_err);
    worst_grad = std::max({worst_grad, gq, gk, gv});
    const auto pad = in.padding();
    int64_t touched = 0;
    for (size_t i = 0; i < pad.size(); ++i) touched += pad[i] && f.grad[i] != 7.0f;
    EXPECT_EQ(touched, 0);
  }
  std::printf("bf16 attention: worst relative error %.2e (out), %.2e (gradients)\n", worst_out,
              worst_grad);
}

}  // namespace parallama
