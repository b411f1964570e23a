#include "kernels/cross_entropy.h"

#include <cmath>
#include <type_traits>

#include "kernels/vec_math.h"
#include "tensor/profile.h"

namespace parallama::kernels {

namespace {

float row_max(const float* l, int64_t V) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t v = 0; v < V; ++v) mx = l[v] > mx ? l[v] : mx;
  return mx;
}

// Σ exp(l[v] − mx) over a row; with Write, each exponential also goes over l[v]. One sum per
// vector lane (the tail in a last, partial vector), the lanes then added in order: the order of
// the compiler's own vector loop over vexp for rows of whole vectors, in vexp16's half the time.
template <bool Write>
float exp_sum(std::conditional_t<Write, float, const float>* l, float mx, int64_t V) {
  int64_t v = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  const __m512 m = _mm512_set1_ps(mx);
  __m512 acc = _mm512_setzero_ps();
  for (; v < V; v += 16) {  // the tail in the first lanes of a last, partial vector
    const __mmask16 k = V - v >= 16 ? __mmask16(0xffff) : __mmask16((1u << (V - v)) - 1);
    const __m512 e = vexp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, l + v), m));
    if constexpr (Write) _mm512_mask_storeu_ps(l + v, k, e);
    acc = _mm512_mask_add_ps(acc, k, acc, e);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc);
  for (float x : lanes) sum += x;
#endif
  for (; v < V; ++v) {
    const float e = vexp(l[v] - mx);
    if constexpr (Write) l[v] = e;
    sum += e;
  }
  return sum;
}

float row_sum_exp(const float* l, float mx, int64_t V) {
  return exp_sum<false>(l, mx, V);
}

// d = (softmax − onehot(target)) · dloss over the columns [j0, j0 + V) of one row, given its
// stats; 0 for an ignored row. l holds the logits, or with exps their exp(logit − m).
void grad_piece(float* d, const float* l, int64_t V, const float* stats, int32_t target,
                float dloss, int64_t j0, bool exps) {
  if (target == kIgnoreIndex) {
    for (int64_t v = 0; v < V; ++v) d[v] = 0.0f;
    return;
  }
  const float mx = stats[0], log_sum = stats[1];
  if (exps) {
    const float f = std::exp(-log_sum) * dloss;  // 1 / Σ exp(logit − m), times dloss
#pragma omp simd
    for (int64_t v = 0; v < V; ++v) d[v] = l[v] * f;
  } else {
    int64_t v = 0;
#if defined(__AVX512F__)
    const __m512 m = _mm512_set1_ps(mx), ls = _mm512_set1_ps(log_sum), g = _mm512_set1_ps(dloss);
    for (; v + 16 <= V; v += 16)
      _mm512_storeu_ps(
          d + v,
          _mm512_mul_ps(vexp16(_mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(l + v), m), ls)), g));
#endif
    for (; v < V; ++v) d[v] = vexp((l[v] - mx) - log_sum) * dloss;
  }
  const int64_t t = static_cast<int64_t>(target) - j0;
  if (t >= 0 && t < V) d[t] -= dloss;
}

// grad_piece rounded to t in stages on the stack: the fp32 values are read once and the 16-bit
// gradient written once.
void grad_piece_lowp(DType t, uint16_t* out, const float* l, int64_t cols, const float* stats,
                     int32_t target, float dloss, int64_t j0, bool exps) {
  constexpr int64_t kStage = 1024;
  alignas(64) float d[kStage];
  for (int64_t j = 0; j < cols; j += kStage) {
    const int64_t m = std::min(kStage, cols - j);
    grad_piece(d, l + j, m, stats, target, dloss, j0 + j, exps);
    to_lowp_serial(t, out + j, d, m);
  }
}

// Loss and stats of one row; with Write, exp(logit − m) also goes over the logits. The row stays
// in cache between its two passes.
template <bool Write>
void forward_row(float* loss, float* stats, std::conditional_t<Write, float, const float>* l,
                 int32_t target, int64_t V) {
  const float mx = row_max(l, V);
  const float target_logit = target == kIgnoreIndex ? 0.0f : l[target];  // before it is written
  const float sum = exp_sum<Write>(l, mx, V);
  const float log_sum = std::log(sum);
  stats[0] = mx;
  stats[1] = log_sum;
  *loss = target == kIgnoreIndex ? 0.0f : log_sum + (mx - target_logit);
}

template <bool Write>
void forward_rows(float* losses, float* stats,
                  std::conditional_t<Write, float, const float>* logits, const int32_t* targets,
                  int64_t N, int64_t V) {
  prof::KindScope scope(prof::Kind::cross_entropy);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    forward_row<Write>(losses + n, stats + 2 * n, logits + n * V, targets[n], V);
}

}  // namespace

void cross_entropy_forward(float* losses, float* stats, const float* logits, const int32_t* targets,
                           int64_t N, int64_t V) {
  forward_rows<false>(losses, stats, logits, targets, N, V);
}

void cross_entropy_forward_exps(float* losses, float* stats, float* logits, const int32_t* targets,
                                int64_t N, int64_t V) {
  forward_rows<true>(losses, stats, logits, targets, N, V);
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* stats,
                            const int32_t* targets, float dloss, int64_t N, int64_t V, int64_t v0,
                            bool exps) {
  prof::KindScope scope(prof::Kind::cross_entropy);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    grad_piece(dlogits + n * V, logits + n * V, V, stats + 2 * n, targets[n], dloss, v0, exps);
}

uint16_t* cross_entropy_backward_lowp(DType t, float* logits, const float* stats,
                                      const int32_t* targets, float dloss, int64_t N, int64_t V,
                                      int64_t v0, bool exps) {
  prof::KindScope scope(prof::Kind::cross_entropy);
  return narrow_in_place(
      logits, N, V, [&](int64_t n, int64_t j0, uint16_t* out, const float* l, int64_t cols) {
        grad_piece_lowp(t, out, l, cols, stats + 2 * n, targets[n], dloss, v0 + j0, exps);
      });
}

uint16_t* cross_entropy_forward_grad_lowp(DType t, float* losses, float* stats, float* logits,
                                          const int32_t* targets, int64_t N, int64_t V) {
  prof::KindScope scope(prof::Kind::cross_entropy);
  // Each row whole, while it is in cache: its stats and exponentials, then its gradient.
  return narrow_rows_in_place(logits, N, V, [&](int64_t n, uint16_t* out, float* l) {
    forward_row<true>(losses + n, stats + 2 * n, l, targets[n], V);
    grad_piece_lowp(t, out, l, V, stats + 2 * n, targets[n], 1.0f, 0, true);
  });
}

void cross_entropy_local_max(float* mx, const float* logits, int64_t N, int64_t Vl) {
  prof::KindScope scope(prof::Kind::cross_entropy);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) mx[n] = row_max(logits + n * Vl, Vl);
}

void cross_entropy_local_sums(float* part, const float* logits, const float* mx,
                              const int32_t* targets, int64_t N, int64_t Vl, int64_t v0) {
  prof::KindScope scope(prof::Kind::cross_entropy);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits + n * Vl;
    const int64_t t = static_cast<int64_t>(targets[n]) - v0;
    part[2 * n] = row_sum_exp(l, mx[n], Vl);
    part[2 * n + 1] = targets[n] != kIgnoreIndex && t >= 0 && t < Vl ? l[t] : 0.0f;
  }
}

void cross_entropy_finish(float* losses, float* stats, const float* mx, const float* part,
                          const int32_t* targets, int64_t N) {
  prof::KindScope scope(prof::Kind::cross_entropy);
  for (int64_t n = 0; n < N; ++n) {
    const float log_sum = std::log(part[2 * n]);
    stats[2 * n] = mx[n];
    stats[2 * n + 1] = log_sum;
    losses[n] = targets[n] == kIgnoreIndex ? 0.0f : log_sum + (mx[n] - part[2 * n + 1]);
  }
}

}  // namespace parallama::kernels
