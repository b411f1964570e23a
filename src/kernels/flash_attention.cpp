#include "kernels/flash_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/flash_rows.h"
#include "kernels/matmul.h"
#include "kernels/vec_math.h"
#include "tensor/error.h"
#include "tensor/profile.h"

namespace parallama::kernels {

// The tiles' products (scores, p · v and the gradient products) are small GEMMs, each run
// single-threaded inside its task, and the softmax is applied between them; per-thread scratch
// is O(kBlock · (kBlock + D)) plus O(T).
using flash::kBlock;

void AttnScratch::prepare(int threads) {
  if (f_.size() < static_cast<size_t>(threads)) f_.resize(threads), h_.resize(threads);
}

float* AttnScratch::floats(int t, int64_t n) {
  auto& v = f_.at(static_cast<size_t>(t));
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

uint16_t* AttnScratch::halves(int t, int64_t n) {
  auto& v = h_.at(static_cast<size_t>(t));
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

void flash_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                             const AttnDims& d, AttnScratch& scratch) {
  prof::KindScope scope(prof::Kind::attention);
  const int64_t T = d.T, H = d.H, D = d.D, group = d.H / d.KVH, P = d.past, Tk = P + T;
  const int64_t nblocks = (T + kBlock - 1) / kBlock;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  scratch.prepare(omp_get_max_threads());
#pragma omp parallel
  {
    // acc (kBlock × D), scores / probabilities (kBlock × kBlock), running max m and sum l
    float* const acc = scratch.floats(omp_get_thread_num(), kBlock * (D + kBlock + 2));
    float* const s = acc + kBlock * D;
    float* const m = s + kBlock * kBlock;
    float* const l = m + kBlock;
    // Later query blocks see more keys: hand them out one at a time.
#pragma omp for collapse(3) schedule(dynamic, 1)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t qb = 0; qb < nblocks; ++qb) {
          const int64_t i0 = qb * kBlock, n = std::min(kBlock, T - i0);
          const float* kh = k + b * Tk * d.ldkv + (h / group) * D;
          const float* vh = v + b * Tk * d.ldkv + (h / group) * D;
          const float* qi = q + (b * T + i0) * d.ldq + h * D;
          std::fill(acc, acc + n * D, 0.0f);
          std::fill(m, m + n, -INFINITY);
          std::fill(l, l + n, 0.0f);
          // Row r of the block is at position P + i0 + r and sees keys up to it. Key blocks
          // start at 0, so with P = 0 only the diagonal tile is masked.
          for (int64_t j0 = 0; j0 < P + i0 + n; j0 += kBlock) {
            const int64_t nk = std::min(kBlock, P + i0 + n - j0);
            const bool masked = j0 + nk > P + i0 + 1;
            // s (n, nk) = scale · q_block · k_blockᵀ
            gemm(false, true, n, nk, D, scale, qi, d.ldq, kh + j0 * d.ldkv, d.ldkv, 0.0f, s,
                 kBlock);
            for (int64_t r = 0; r < n; ++r) {
              // keys visible to this row (every row sees the first tile's key 0)
              const int64_t je = masked ? std::clamp<int64_t>(P + i0 + r + 1 - j0, 0, nk) : nk;
              const float alpha =
                  flash::online_softmax_row(s + r * kBlock, je, nk, 1.0f, m[r], l[r]);
              if (alpha != 1.0f) {
                float* a = acc + r * D;
                for (int64_t x = 0; x < D; ++x) a[x] *= alpha;
              }
            }
            // acc (n, D) += p (n, nk) · v_block (nk, D)
            gemm(false, false, n, D, nk, 1.0f, s, kBlock, vh + j0 * d.ldkv, d.ldkv, 1.0f, acc, D);
          }
          for (int64_t r = 0; r < n; ++r) {
            const float inv = 1.0f / l[r];
            float* o = out + ((b * T + i0 + r) * H + h) * D;
            const float* a = acc + r * D;
            for (int64_t x = 0; x < D; ++x) o[x] = a[x] * inv;
            if (lse) lse[(b * H + h) * T + i0 + r] = m[r] + std::log(l[r]);
          }
        }
  }
}

void flash_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                              const float* lse, const float* q, const float* k, const float* v,
                              const AttnDims& d, AttnScratch& scratch) {
  prof::KindScope scope(prof::Kind::attention);
  if (d.past != 0) throw Error("internal: the attention backward runs without a KV cache");
  const int64_t T = d.T, H = d.H, D = d.D, group = d.H / d.KVH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // One task per (batch, KV head): it owns dk and dv of that KV head and dq of its query heads,
  // so no two threads write the same memory, and the order of accumulation is fixed.
  scratch.prepare(omp_get_max_threads());
#pragma omp parallel
  {
    // delta (T): Σ_x dout·out per row of one head; p and ds (kBlock × kBlock) of one tile
    float* const delta = scratch.floats(omp_get_thread_num(), T + 2 * kBlock * kBlock);
    float* const p = delta + T;
    float* const ds = p + kBlock * kBlock;
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t kvh = 0; kvh < d.KVH; ++kvh) {
        const float* kh = k + b * T * d.ldkv + kvh * D;
        const float* vh = v + b * T * d.ldkv + kvh * D;
        float* dkh = dk + b * T * d.ldkv + kvh * D;
        float* dvh = dv + b * T * d.ldkv + kvh * D;
        for (int64_t t = 0; t < T; ++t) {
          std::fill(dkh + t * d.ldkv, dkh + t * d.ldkv + D, 0.0f);
          std::fill(dvh + t * d.ldkv, dvh + t * d.ldkv + D, 0.0f);
        }
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          const float* qh = q + b * T * d.ldq + h * D;
          float* dqh = dq + b * T * d.ldq + h * D;
          const float* goh = dout + b * T * H * D + h * D;  // row t at goh + t·H·D
          const float* lh = lse + (b * H + h) * T;
          flash::row_deltas(delta, goh, H * D, out + (b * T * H + h) * D, H * D, T, D);
          for (int64_t t = 0; t < T; ++t) std::fill(dqh + t * d.ldq, dqh + t * d.ldq + D, 0.0f);
          // Key block outer: its k, v, dk, dv stay in cache while every later query block passes.
          for (int64_t j0 = 0; j0 < T; j0 += kBlock) {
            const int64_t nk = std::min(kBlock, T - j0);
            for (int64_t i0 = j0; i0 < T; i0 += kBlock) {
              const int64_t n = std::min(kBlock, T - i0);
              const bool diagonal = i0 == j0;
              // p (n, nk) = scale · q_block · k_blockᵀ, ds = dout_block · v_blockᵀ for now
              gemm(false, true, n, nk, D, scale, qh + i0 * d.ldq, d.ldq, kh + j0 * d.ldkv, d.ldkv,
                   0.0f, p, kBlock);
              gemm(false, true, n, nk, D, 1.0f, goh + i0 * H * D, H * D, vh + j0 * d.ldkv, d.ldkv,
                   0.0f, ds, kBlock);
              for (int64_t r = 0; r < n; ++r)
                flash::softmax_grad_row(p + r * kBlock, ds + r * kBlock, 0, diagonal ? r + 1 : nk,
                                        nk, 1.0f, lh + i0 + r, delta + i0 + r, 0, scale);
              // dv_block += pᵀ · dout_block, dk_block += dsᵀ · q_block, dq_block += ds · k_block
              gemm(true, false, nk, D, n, 1.0f, p, kBlock, goh + i0 * H * D, H * D, 1.0f,
                   dvh + j0 * d.ldkv, d.ldkv);
              gemm(true, false, nk, D, n, 1.0f, ds, kBlock, qh + i0 * d.ldq, d.ldq, 1.0f,
                   dkh + j0 * d.ldkv, d.ldkv);
              gemm(false, false, n, D, nk, 1.0f, ds, kBlock, kh + j0 * d.ldkv, d.ldkv, 1.0f,
                   dqh + i0 * d.ldq, d.ldq);
            }
          }
        }
      }
  }
}

}  // namespace parallama::kernels
