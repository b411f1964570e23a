#pragma once
// The softmax steps of the memory-light attention, shared by its fp32 and bf16 kernels: they
// differ only in how the tiles' products are formed.
#include <algorithm>
#include <cstdint>

#include "kernels/vec_math.h"

namespace parallama::kernels::flash {

// Work goes in tiles of kBlock queries × kBlock keys; query and key blocks share one grid, so
// only a diagonal tile needs the causal mask.
constexpr int64_t kBlock = 64;

// One row of the forward's running softmax: sr holds the row's nk scores (times `scale` gives
// the scaled score), of which the first je are visible. Writes exp(score − new max) over them (0
// past je), folds their sum into l and the new max into m, and returns the factor by which the
// row's running output must shrink (0 on the row's first tile, where m was −∞).
inline float online_softmax_row(float* sr, int64_t je, int64_t nk, float scale, float& m,
                                float& l) {
  float mx = m;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < je; ++j) mx = sr[j] * scale > mx ? sr[j] * scale : mx;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < je; ++j) {
    sr[j] = vexp(sr[j] * scale - mx);
    sum += sr[j];
  }
  for (int64_t j = je; j < nk; ++j) sr[j] = 0.0f;
  const float alpha = vexp(m - mx);
  l = l * alpha + sum;
  m = mx;
  return alpha;
}

// The backward's probabilities and score gradients over columns [j0, j1) of a tile row (0 on
// the columns of [0, n) outside it): p = exp(score · scale − lse), ds = p · (dp − delta) · scale,
// with p holding the scores and ds holding dp = dout · v on entry. lse and delta are per column
// (stride 1) or one value for the row (stride 0).
inline void softmax_grad_row(float* p, float* ds, int64_t j0, int64_t j1, int64_t n, float s_scale,
                             const float* lse, const float* delta, int64_t stride, float scale) {
  for (int64_t j = 0; j < j0; ++j) p[j] = ds[j] = 0.0f;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    p[j] = vexp(p[j] * s_scale - lse[j * stride]);
    ds[j] = p[j] * (ds[j] - delta[j * stride]) * scale;
  }
  for (int64_t j = j1; j < n; ++j) p[j] = ds[j] = 0.0f;
}

// delta[t] = Σ_x dout[t]·out[t] over the T rows of one head (rows at strides ld_dout, ld_out):
// the softmax backward's row term.
inline void row_deltas(float* delta, const float* dout, int64_t ld_dout, const float* out,
                       int64_t ld_out, int64_t T, int64_t D) {
  for (int64_t t = 0; t < T; ++t) {
    const float* go = dout + t * ld_dout;
    const float* o = out + t * ld_out;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t x = 0; x < D; ++x) s += go[x] * o[x];
    delta[t] = s;
  }
}

}  // namespace parallama::kernels::flash
