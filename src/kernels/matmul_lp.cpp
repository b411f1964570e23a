// bf16 and fp16 matrix multiplies with fp32 accumulation, and the conversions they need.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/pairs.h"
#include "tensor/bf16.h"
#include "tensor/error.h"
#include "tensor/profile.h"

namespace parallama::kernels {

namespace {

float f16_to_float_scalar(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return static_cast<float>(v);
}

uint16_t float_to_f16_scalar(float f) {
  const _Float16 v = static_cast<_Float16>(f);  // round to nearest even; ±inf beyond ±65504
  uint16_t h;
  std::memcpy(&h, &v, 2);
  return h;
}

void to_f16(uint16_t* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
#endif
  for (; i < n; ++i) dst[i] = float_to_f16_scalar(src[i]);
}

// As float_to_bf16, 16 at a time where the CPU converts to bf16 itself. Its instruction takes
// subnormal inputs as zero, so a group that holds one is rounded element by element instead.
void to_bf16(uint16_t* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512BF16__)
  const __m512i exponent = _mm512_set1_epi32(0x7f800000), mantissa = _mm512_set1_epi32(0x007fffff);
  for (; i + 16 <= n; i += 16) {
    const __m512i x = _mm512_loadu_si512(src + i);
    if (_mm512_testn_epi32_mask(x, exponent) & _mm512_test_epi32_mask(x, mantissa)) {
      for (int64_t k = i; k < i + 16; ++k) dst[k] = float_to_bf16(src[k]);
      continue;
    }
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_castsi512_ps(x));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<const __m256i&>(h));
  }
#endif
  for (; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

void from_f16(float* dst, const uint16_t* src, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = f16_to_float_scalar(src[i]);
}

// Blocks of this many elements per OpenMP iteration.
constexpr int64_t kBlock = 1 << 14;

template <class F>
void blocked(int64_t n, F&& f) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) f(b * kBlock, std::min(n, (b + 1) * kBlock));
}

using dnnl::memory;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// c (M, N) = a (M, K) · b (K, N) in bf16, summed in fp32, added to c when accumulating.
dnnl::matmul::primitive_desc matmul_desc(const memory::desc& a, const memory::desc& b,
                                         const memory::desc& c, bool accumulate,
                                         bool scaled = false) {
  dnnl::primitive_attr attr;
  if (scaled) attr.set_output_scales(0, {DNNL_RUNTIME_F32_VAL});  // before the sum: alpha · a·b
  if (accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  try {
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, engine());
  } catch (const dnnl::error& e) {
    const memory::dims ad = a.dims();
    throw Error(std::string("oneDNN has no bf16 matmul for M=") + std::to_string(ad[0]) + " N=" +
                std::to_string(c.dims()[1]) + " K=" + std::to_string(ad[1]) + ": " + e.what());
  }
}

// oneDNN matmul primitives are costly to create: one per shape, kept.
struct Plan {
  dnnl::matmul prim;
  memory::desc a, b, c;
};

const Plan& plan_for(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                     int64_t ldc, bool accumulate, bool scaled) {
  using Key =
      std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool>;
  static std::map<Key, Plan> plans;
  static std::mutex mu;
  const Key key{ta, tb, M, N, K, lda, ldb, ldc, accumulate, scaled};
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  const auto bf16 = memory::data_type::bf16;
  Plan p;
  p.a = memory::desc({M, K}, bf16, ta ? memory::dims{1, lda} : memory::dims{lda, 1});
  p.b = memory::desc({K, N}, bf16, tb ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  p.c = memory::desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
  p.prim = dnnl::matmul(matmul_desc(p.a, p.b, p.c, accumulate, scaled));
  return plans.emplace(key, std::move(p)).first->second;
}

// Widened copy of a stored rows × cols fp16 matrix (leading dimension ld), dense.
const float* widen(std::vector<float>& buf, const uint16_t* src, int64_t rows, int64_t cols,
                   int64_t ld) {
  prof::KindScope scope(prof::Kind::convert);
  buf.resize(static_cast<size_t>(rows * cols));
  float* d = buf.data();
#pragma omp parallel for schedule(static) if (rows * cols > kBlock)
  for (int64_t r = 0; r < rows; ++r) from_f16(d + r * cols, src + r * ld, cols);
  return d;
}

}  // namespace

void to_lowp(DType t, uint16_t* dst, const float* src, int64_t n) {
  prof::KindScope scope(prof::Kind::convert);
  if (t == DType::F16) {
    blocked(n, [&](int64_t lo, int64_t hi) { to_f16(dst + lo, src + lo, hi - lo); });
    return;
  }
  blocked(n, [&](int64_t lo, int64_t hi) { to_bf16(dst + lo, src + lo, hi - lo); });
}

void from_lowp(DType t, float* dst, const uint16_t* src, int64_t n) {
  prof::KindScope scope(prof::Kind::convert);
  if (t == DType::F16) {
    blocked(n, [&](int64_t lo, int64_t hi) { from_f16(dst + lo, src + lo, hi - lo); });
    return;
  }
  blocked(n, [&](int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) dst[i] = bf16_to_float(src[i]);
  });
}

void to_lowp_serial(DType t, uint16_t* dst, const float* src, int64_t n) {
  if (t == DType::F16)
    to_f16(dst, src, n);
  else
    to_bf16(dst, src, n);
}

uint16_t* to_lowp_in_place(DType t, float* buf, int64_t rows, int64_t cols) {
  prof::KindScope scope(prof::Kind::convert);
  return narrow_in_place(buf, rows, cols,
                         [&](int64_t, int64_t, uint16_t* out, const float* in, int64_t n) {
                           to_lowp_serial(t, out, in, n);
                         });
}

namespace {

// The pairs-of-rows layouts oneDNN's bf16 kernels read a weight in, for a weight stored by rows
// (K, N): tiles of 2·bk rows × bn columns at k/(2·bk) · s0 + n/bn · s1, within a tile the row
// pairs one after another, each bn columns of (row 2p, row 2p + 1) values side by side; padded to
// pk × pn with zeros. oneDNN's own reorder into it runs at a fraction of the memory's speed (9 ms
// for bench15m's head, against under 2 ms here).
struct PairLayout {
  int64_t bk = 0, bn = 0, s0 = 0, s1 = 0, pk = 0, pn = 0;
};

// The layout of desc when it is one of those (and not a transposed weight); else bk = 0.
PairLayout pair_layout(const memory::desc& desc, bool trans_b) {
  const dnnl_memory_desc_t& d = desc.data;
  PairLayout l;
  if (trans_b || d.ndims != 2 || d.format_kind != dnnl_blocked) return l;
  const auto& b = d.format_desc.blocking;
  if (b.inner_nblks != 3 || b.inner_idxs[0] != 0 || b.inner_idxs[1] != 1 || b.inner_idxs[2] != 0 ||
      b.inner_blks[2] != 2 || d.offset0 != 0)
    return l;
  l.bk = b.inner_blks[0], l.bn = b.inner_blks[1], l.s0 = b.strides[0], l.s1 = b.strides[1];
  l.pk = d.padded_dims[0], l.pn = d.padded_dims[1];
  if (l.pk % (2 * l.bk) != 0 || l.pn % l.bn != 0) l.bk = 0;
  return l;
}

}  // namespace

struct PackedGemm::Impl {
  bool trans_b, accumulate;
  int64_t M, N, K, lda, ldb, ldc;
  dnnl::matmul prim;
  memory::desc a, b_plain, c;
  memory b_packed;
  dnnl::reorder repack;
  PairLayout pairs;  // bk > 0: packed here rather than by the reorder

  void pack_pairs(const uint16_t* b) {
    const PairLayout& l = pairs;
    auto* out = static_cast<uint16_t*>(b_packed.get_data_handle());
    const int64_t rows = 2 * l.bk;
#pragma omp parallel for schedule(static)
    for (int64_t kb = 0; kb < l.pk / rows; ++kb)
      for (int64_t nb = 0; nb < l.pn / l.bn; ++nb) {
        const int64_t n0 = nb * l.bn, nn = std::clamp<int64_t>(N - n0, 0, l.bn);
        for (int64_t p = 0; p < l.bk; ++p) {
          const int64_t k = kb * rows + 2 * p;
          uint16_t* o = out + kb * l.s0 + nb * l.s1 + p * l.bn * 2;
          interleave(o, k < K ? b + k * ldb + n0 : nullptr,
                     k + 1 < K ? b + (k + 1) * ldb + n0 : nullptr, nn);
          std::fill(o + 2 * nn, o + 2 * l.bn, uint16_t{0});
        }
      }
  }
};

PackedGemm::PackedGemm(bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                       int64_t ldc, bool accumulate)
    : impl_(std::make_unique<Impl>()) {
  Impl& p = *impl_;
  p.trans_b = trans_b, p.accumulate = accumulate;
  p.M = M, p.N = N, p.K = K, p.lda = lda, p.ldb = ldb, p.ldc = ldc;
  const auto bf16 = memory::data_type::bf16;
  p.a = memory::desc({M, K}, bf16, memory::dims{lda, 1});
  p.b_plain = memory::desc({K, N}, bf16, trans_b ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  p.c = memory::desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
  const memory::desc b_any({K, N}, bf16, memory::format_tag::any);
  const dnnl::matmul::primitive_desc pd = matmul_desc(p.a, b_any, p.c, accumulate);
  p.prim = dnnl::matmul(pd);
  p.b_packed = memory(pd.weights_desc(), engine());
  p.pairs = pair_layout(pd.weights_desc(), trans_b);
  try {
    p.repack = dnnl::reorder(
        dnnl::reorder::primitive_desc(engine(), p.b_plain, engine(), pd.weights_desc()));
  } catch (const dnnl::error& e) {
    throw Error(std::string("oneDNN cannot pack a bf16 weight for K=") + std::to_string(K) +
                " N=" + std::to_string(N) + ": " + e.what());
  }
}

PackedGemm::~PackedGemm() = default;

bool PackedGemm::matches(bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                         int64_t ldc, bool accumulate) const {
  const Impl& p = *impl_;
  return p.trans_b == trans_b && p.M == M && p.N == N && p.K == K && p.lda == lda && p.ldb == ldb &&
         p.ldc == ldc && p.accumulate == accumulate;
}

void PackedGemm::pack(const uint16_t* b) {
  prof::KindScope scope(prof::Kind::convert);
  if (impl_->pairs.bk > 0) return impl_->pack_pairs(b);
  static dnnl::stream stream(engine());
  memory plain(impl_->b_plain, engine(), const_cast<uint16_t*>(b));
  impl_->repack.execute(stream, plain, impl_->b_packed);
  stream.wait();
}

void PackedGemm::run(const uint16_t* a, float* c) const {
  prof::KindScope scope(prof::Kind::gemm_lp);
  static dnnl::stream stream(engine());
  memory am(impl_->a, engine(), const_cast<uint16_t*>(a));
  memory cm(impl_->c, engine(), c);
  impl_->prim.execute(
      stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, impl_->b_packed}, {DNNL_ARG_DST, cm}});
  stream.wait();
}

bool PackedGemm::packs_pairs() const {
  return impl_->pairs.bk > 0;
}

int64_t PackedGemm::bytes() const {
  return static_cast<int64_t>(impl_->b_packed.get_desc().get_size());
}

void gemm_lp(DType t, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
             const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c,
             int64_t ldc, float alpha, WidenScratch* widened) {
  if (M == 0 || N == 0) return;
  if (beta != 0.0f && beta != 1.0f) throw Error("internal: gemm_lp takes beta 0 or 1");
  if (K == 0) {
    if (beta == 0.0f)
      for (int64_t i = 0; i < M; ++i) std::memset(c + i * ldc, 0, N * sizeof(float));
    return;
  }
  if (t == DType::F16) {  // exact: every fp16 value and product is representable in fp32
    WidenScratch own;
    std::vector<float>& wa = widened ? widened->a : own.a;
    std::vector<float>& wb = widened ? widened->b : own.b;
    const float* fa = trans_a ? widen(wa, a, K, M, lda) : widen(wa, a, M, K, lda);
    const float* fb = trans_b ? widen(wb, b, N, K, ldb) : widen(wb, b, K, N, ldb);
    gemm(trans_a, trans_b, M, N, K, alpha, fa, trans_a ? M : K, fb, trans_b ? K : N, beta, c, ldc);
    return;
  }
  prof::KindScope scope(prof::Kind::gemm_lp);
  const bool scaled = alpha != 1.0f;
  const Plan& p = plan_for(trans_a, trans_b, M, N, K, lda, ldb, ldc, beta != 0.0f, scaled);
  static dnnl::stream stream(engine());
  memory am(p.a, engine(), const_cast<uint16_t*>(a));
  memory bm(p.b, engine(), const_cast<uint16_t*>(b));
  memory cm(p.c, engine(), c);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
  if (scaled)
    args.emplace(DNNL_ARG_ATTR_OUTPUT_SCALES,
                 memory({{1}, memory::data_type::f32, memory::format_tag::x}, engine(), &alpha));
  p.prim.execute(stream, args);
  stream.wait();
}

}  // namespace parallama::kernels
