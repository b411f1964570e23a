// The memory-light attention with its tile products in bf16 (AVX-512 BF16 dot products, fp32
// sums): same tiles, softmax and task split as flash_attention.cpp. Operands are rounded to bf16
// as they are packed: q, k, v, dout once per head, the probabilities and score gradients once per
// tile; everything else (scores, softmax, the outputs and gradients they add into) stays fp32.
//
// A product c (m, n) += a (m, K) · b (K, n) reads a row-major with K's pairs of values adjacent
// (one 32-bit broadcast) and b "paired": element (2p + e, j) at ((p · ldb + j) · 2 + e), so that
// one 64-byte load holds the pair p of 16 columns. The backward works in the transposed tile
// (keys as rows, queries as columns), where every operand it needs comes out of a row-wise
// conversion: no tile is transposed.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include "kernels/flash_attention.h"
#include "kernels/flash_rows.h"
#include "kernels/matmul.h"
#include "kernels/pairs.h"
#include "tensor/bf16.h"
#include "tensor/error.h"
#include "tensor/profile.h"

namespace parallama::kernels {

bool flash_attention_bf16_available() {
#if defined(__AVX512BF16__)
  return true;
#else
  return false;
#endif
}

#if defined(__AVX512BF16__)

namespace {

using flash::kBlock;

int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

template <int R, int NV>
void dot_rows(float* c, int64_t ldc, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
              int64_t pairs, bool accumulate) {
  __m512 s[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v)
      s[r][v] = accumulate ? _mm512_loadu_ps(c + r * ldc + 16 * v) : _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + (p * ldb + 16 * v) * 2);
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * lda + 2 * p, 4);
      const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
      for (int v = 0; v < NV; ++v) s[r][v] = _mm512_dpbf16_ps(s[r][v], av, bv[v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + r * ldc + 16 * v, s[r][v]);
}

template <int R>
void dot_rows_nv(int nv, float* c, int64_t ldc, const uint16_t* a, int64_t lda, const uint16_t* b,
                 int64_t ldb, int64_t pairs, bool accumulate) {
  switch (nv) {
    case 1:
      return dot_rows<R, 1>(c, ldc, a, lda, b, ldb, pairs, accumulate);
    case 2:
      return dot_rows<R, 2>(c, ldc, a, lda, b, ldb, pairs, accumulate);
    case 3:
      return dot_rows<R, 3>(c, ldc, a, lda, b, ldb, pairs, accumulate);
    default:
      return dot_rows<R, 4>(c, ldc, a, lda, b, ldb, pairs, accumulate);
  }
}

// c (m, 16 · nv) (+)= a (m, 2 · pairs) · b (2 · pairs, 16 · nv), b paired with row length ldb.
void dot(float* c, int64_t ldc, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
         int64_t m, int64_t nv, int64_t pairs, bool accumulate) {
  for (int64_t v0 = 0; v0 < nv; v0 += 4) {
    const int w = static_cast<int>(std::min<int64_t>(4, nv - v0));
    const uint16_t* bv = b + 32 * v0;
    float* cv = c + 16 * v0;
    int64_t r = 0;
    for (; r + 4 <= m; r += 4)
      dot_rows_nv<4>(w, cv + r * ldc, ldc, a + r * lda, lda, bv, ldb, pairs, accumulate);
    for (; r < m; ++r)
      dot_rows_nv<1>(w, cv + r * ldc, ldc, a + r * lda, lda, bv, ldb, pairs, accumulate);
  }
}

// rows × cols fp32 (leading dimension ld) → bf16 rows of width w ≥ cols (zero past cols), each
// value rounded to nearest even as float_to_bf16 does, inline (rows here are short).
void rows_bf16(uint16_t* dst, int64_t w, const float* src, int64_t ld, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * ld;
    uint16_t* y = dst + r * w;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) y[j] = float_to_bf16(x[j]);
    std::fill(y + cols, y + w, uint16_t{0});
  }
}

// bf16 rows (width w, even; rows rows) → paired by rows: pair p of columns j holds rows 2p and
// 2p + 1 (zero past rows); out has `pairs` pairs of row length w.
void pair_rows(uint16_t* out, const uint16_t* x, int64_t w, int64_t rows, int64_t pairs) {
  for (int64_t p = 0; p < pairs; ++p) {
    const uint16_t* r0 = x + 2 * p * w;
    interleave(out + p * w * 2, 2 * p < rows ? r0 : nullptr, 2 * p + 1 < rows ? r0 + w : nullptr,
               w);
  }
}

// bf16 rows (width 2 · pairs) → paired by columns: pair p of row t holds columns 2p, 2p + 1 of
// row t, at (p · ld + t) · 2 (rows past `rows`, up to ld, zero).
void pair_cols(uint16_t* out, const uint16_t* x, int64_t rows, int64_t pairs, int64_t ld) {
  std::fill(out, out + pairs * ld * 2, uint16_t{0});
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t p = 0; p < pairs; ++p)
      std::memcpy(out + (p * ld + t) * 2, x + (t * pairs + p) * 2, 4);
}

// The padded sizes of the operands: D2 pairs of head dimensions, Dv and Tp rounded up to whole
// 16-lane vectors, T2 pairs of positions (up to Tp), nvD vectors across Dv.
struct Sizes {
  int64_t D2, Dv, Tp, T2, nvD;
  float scale;
  explicit Sizes(const AttnDims& d)
      : D2((d.D + 1) / 2),
        Dv(round_up(d.D, 16)),
        Tp(round_up(d.T, 16)),
        T2(Tp / 2),
        nvD(Dv / 16),
        scale(1.0f / std::sqrt(static_cast<float>(d.D))) {
    if (d.past != 0) throw Error("internal: the bf16 attention runs without a KV cache");
  }
};

}  // namespace

void flash_attention_forward_bf16(float* out, float* lse, const float* q, const float* k,
                                  const float* v, const AttnDims& d, AttnScratch& scratch) {
  prof::KindScope scope(prof::Kind::attention);
  const Sizes z(d);
  const int64_t T = d.T, H = d.H, D = d.D, group = d.H / d.KVH;
  const int64_t D2 = z.D2, Dv = z.Dv, Tp = z.Tp, T2 = z.T2, nvD = z.nvD;
  const float scale = z.scale;
  scratch.prepare(omp_get_max_threads());
#pragma omp parallel
  {
    const int thread = omp_get_thread_num();
    // q rows (T, 2·D2); k paired by columns (D2, Tp); v paired by rows (T2, Dv); a tile's
    // probabilities (kBlock, kBlock); a staging area for rows of k or v
    uint16_t* const qb = scratch.halves(thread, T * 2 * D2 + 2 * D2 * Tp + T2 * Dv * 2 +
                                                    kBlock * kBlock + Tp * std::max(2 * D2, Dv));
    uint16_t* const kp = qb + T * 2 * D2;
    uint16_t* const vr = kp + 2 * D2 * Tp;
    uint16_t* const pb = vr + T2 * Dv * 2;
    uint16_t* const stage = pb + kBlock * kBlock;
    // acc (kBlock, Dv), scores (kBlock, kBlock), running max and sum
    float* const acc = scratch.floats(thread, kBlock * (Dv + kBlock + 2));
    float* const s = acc + kBlock * Dv;
    float* const m = s + kBlock * kBlock;
    float* const l = m + kBlock;
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / group;
        rows_bf16(qb, 2 * D2, q + b * T * d.ldq + h * D, d.ldq, T, D);
        rows_bf16(stage, 2 * D2, k + b * T * d.ldkv + kvh * D, d.ldkv, T, D);
        pair_cols(kp, stage, T, D2, Tp);
        rows_bf16(stage, Dv, v + b * T * d.ldkv + kvh * D, d.ldkv, T, D);
        pair_rows(vr, stage, Dv, T, T2);
        for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
          const int64_t n = std::min(kBlock, T - i0);
          std::fill(acc, acc + n * Dv, 0.0f);
          std::fill(m, m + n, -INFINITY);
          std::fill(l, l + n, 0.0f);
          for (int64_t j0 = 0; j0 < i0 + n; j0 += kBlock) {
            const int64_t nk = std::min(kBlock, i0 + n - j0);
            const bool diagonal = j0 == i0;
            // s (n, nk) = q_block · k_blockᵀ (scaled in the softmax)
            dot(s, kBlock, qb + i0 * 2 * D2, 2 * D2, kp + j0 * 2, Tp, n, (nk + 15) / 16, D2, false);
            for (int64_t r = 0; r < n; ++r) {
              const float alpha = flash::online_softmax_row(s + r * kBlock, diagonal ? r + 1 : nk,
                                                            nk, scale, m[r], l[r]);
              if (alpha != 1.0f)
                for (int64_t x = 0; x < Dv; ++x) acc[r * Dv + x] *= alpha;
            }
            // acc (n, Dv) += p (n, nk) · v_block (nk, Dv)
            const int64_t nk2 = (nk + 1) / 2;
            rows_bf16(pb, 2 * nk2, s, kBlock, n, nk);
            dot(acc, Dv, pb, 2 * nk2, vr + j0 * Dv, Dv, n, nvD, nk2, true);
          }
          for (int64_t r = 0; r < n; ++r) {
            const float inv = 1.0f / l[r];
            float* o = out + ((b * T + i0 + r) * H + h) * D;
            for (int64_t x = 0; x < D; ++x) o[x] = acc[r * Dv + x] * inv;
            if (lse) lse[(b * H + h) * T + i0 + r] = m[r] + std::log(l[r]);
          }
        }
      }
  }
}

void flash_attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout,
                                   const float* out, const float* lse, const float* q,
                                   const float* k, const float* v, const AttnDims& d,
                                   AttnScratch& scratch) {
  prof::KindScope scope(prof::Kind::attention);
  const Sizes z(d);
  const int64_t T = d.T, H = d.H, D = d.D, group = d.H / d.KVH;
  const int64_t D2 = z.D2, Dv = z.Dv, Tp = z.Tp, T2 = z.T2, nvD = z.nvD;
  const float scale = z.scale;
  scratch.prepare(omp_get_max_threads());
#pragma omp parallel
  {
    const int thread = omp_get_thread_num();
    // Per KV head: k and v rows (T, 2·D2); kᵀ rows (D, Tp). Per query head: q and dout paired
    // by columns (D2, Tp) and by rows (T2, Dv). Per tile: pᵀ and dsᵀ rows (kBlock, kBlock), dsᵀ
    // paired by rows. A staging area.
    const int64_t W = 2 * D2;
    uint16_t* const kb = scratch.halves(thread, 2 * T * W + D * Tp + 2 * (W * Tp + T2 * Dv * 2) +
                                                    3 * kBlock * kBlock + Tp * std::max(W, Dv));
    uint16_t* const vb = kb + T * W;
    uint16_t* const kt = vb + T * W;
    uint16_t* const qp = kt + D * Tp;
    uint16_t* const op = qp + W * Tp;
    uint16_t* const qr = op + W * Tp;
    uint16_t* const orr = qr + T2 * Dv * 2;
    uint16_t* const ptb = orr + T2 * Dv * 2;
    uint16_t* const dstb = ptb + kBlock * kBlock;
    uint16_t* const dsp = dstb + kBlock * kBlock;
    uint16_t* const stage = dsp + kBlock * kBlock;
    // dk, dv (T, Dv) and dqᵀ (D, Tp) sums; delta (T); the tile's pᵀ and dsᵀ (kBlock, kBlock)
    float* const dka = scratch.floats(thread, 2 * T * Dv + D * Tp + T + 2 * kBlock * kBlock);
    float* const dva = dka + T * Dv;
    float* const dqt = dva + T * Dv;
    float* const delta = dqt + D * Tp;
    float* const pt = delta + T;
    float* const dst = pt + kBlock * kBlock;
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t kvh = 0; kvh < d.KVH; ++kvh) {
        const float* kh = k + b * T * d.ldkv + kvh * D;
        const float* vh = v + b * T * d.ldkv + kvh * D;
        rows_bf16(kb, W, kh, d.ldkv, T, D);
        rows_bf16(vb, W, vh, d.ldkv, T, D);
        std::fill(kt, kt + D * Tp, uint16_t{0});
        for (int64_t t = 0; t < T; ++t)
          for (int64_t x = 0; x < D; ++x) kt[x * Tp + t] = kb[t * W + x];
        std::fill(dka, dka + 2 * T * Dv, 0.0f);
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          const float* qh = q + b * T * d.ldq + h * D;
          const float* goh = dout + b * T * H * D + h * D;  // row t at goh + t·H·D
          const float* lh = lse + (b * H + h) * T;
          flash::row_deltas(delta, goh, H * D, out + (b * T * H + h) * D, H * D, T, D);
          rows_bf16(stage, W, qh, d.ldq, T, D);
          pair_cols(qp, stage, T, D2, Tp);
          rows_bf16(stage, Dv, qh, d.ldq, T, D);
          pair_rows(qr, stage, Dv, T, T2);
          rows_bf16(stage, W, goh, H * D, T, D);
          pair_cols(op, stage, T, D2, Tp);
          rows_bf16(stage, Dv, goh, H * D, T, D);
          pair_rows(orr, stage, Dv, T, T2);
          std::fill(dqt, dqt + D * Tp, 0.0f);
          // Tiles in the transposed frame: rows are keys j0 + jj, columns queries i0 + c.
          for (int64_t j0 = 0; j0 < T; j0 += kBlock) {
            const int64_t nk = std::min(kBlock, T - j0), nk2 = (nk + 1) / 2;
            for (int64_t i0 = j0; i0 < T; i0 += kBlock) {
              const int64_t n = std::min(kBlock, T - i0), nv = (n + 15) / 16, n2 = (n + 1) / 2;
              const bool diagonal = i0 == j0;
              // pᵀ (nk, n) = k_block · q_blockᵀ, dsᵀ = v_block · dout_blockᵀ for now
              dot(pt, kBlock, kb + j0 * W, W, qp + i0 * 2, Tp, nk, nv, D2, false);
              dot(dst, kBlock, vb + j0 * W, W, op + i0 * 2, Tp, nk, nv, D2, false);
              for (int64_t jj = 0; jj < nk; ++jj)  // query i0 + c sees key j0 + jj when c ≥ jj
                flash::softmax_grad_row(pt + jj * kBlock, dst + jj * kBlock, diagonal ? jj : 0, n,
                                        16 * nv, scale, lh + i0, delta + i0, 1, scale);
              rows_bf16(ptb, 2 * n2, pt, kBlock, nk, n);
              rows_bf16(dstb, kBlock, dst, kBlock, nk, 16 * nv);
              pair_rows(dsp, dstb, kBlock, nk, nk2);
              // dv_block += pᵀ · dout_block, dk_block += dsᵀ · q_block, dqᵀ += kᵀ · dsᵀ
              dot(dva + j0 * Dv, Dv, ptb, 2 * n2, orr + i0 * Dv, Dv, nk, nvD, n2, true);
              dot(dka + j0 * Dv, Dv, dstb, kBlock, qr + i0 * Dv, Dv, nk, nvD, n2, true);
              dot(dqt + i0, Tp, kt + j0, Tp, dsp, kBlock, D, nv, nk2, true);
            }
          }
          float* dqh = dq + b * T * d.ldq + h * D;
          for (int64_t t = 0; t < T; ++t)
            for (int64_t x = 0; x < D; ++x) dqh[t * d.ldq + x] = dqt[x * Tp + t];
        }
        float* dkh = dk + b * T * d.ldkv + kvh * D;
        float* dvh = dv + b * T * d.ldkv + kvh * D;
        for (int64_t t = 0; t < T; ++t)
          for (int64_t x = 0; x < D; ++x)
            dkh[t * d.ldkv + x] = dka[t * Dv + x], dvh[t * d.ldkv + x] = dva[t * Dv + x];
      }
  }
}

#else  // no AVX-512 BF16: callers check flash_attention_bf16_available()

void flash_attention_forward_bf16(float*, float*, const float*, const float*, const float*,
                                  const AttnDims&, AttnScratch&) {
  throw Error("internal: the bf16 attention needs AVX-512 BF16");
}

void flash_attention_backward_bf16(float*, float*, float*, const float*, const float*, const float*,
                                   const float*, const float*, const float*, const AttnDims&,
                                   AttnScratch&) {
  throw Error("internal: the bf16 attention needs AVX-512 BF16");
}

#endif

}  // namespace parallama::kernels
