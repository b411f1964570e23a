#include "kernels/cross_entropy.h"

#include <cmath>

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

float row_sum_exp(const float* l, float mx, int64_t V) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t v = 0; v < V; ++v) sum += vexp(l[v] - mx);
  return sum;
}

}  // namespace

void cross_entropy_forward(float* losses, float* stats, const float* logits, const int32_t* targets,
                           int64_t N, int64_t V) {
  prof::KindScope scope(prof::Kind::cross_entropy);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits + n * V;
    const float mx = row_max(l, V);
    const float log_sum = std::log(row_sum_exp(l, mx, V));
    stats[2 * n] = mx;
    stats[2 * n + 1] = log_sum;
    losses[n] = targets[n] == kIgnoreIndex ? 0.0f : log_sum + (mx - l[targets[n]]);
  }
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* stats,
                            const int32_t* targets, float dloss, int64_t N, int64_t V, int64_t v0) {
  prof::KindScope scope(prof::Kind::cross_entropy);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits + n * V;
    float* d = dlogits + n * V;
    if (targets[n] == kIgnoreIndex) {
      for (int64_t v = 0; v < V; ++v) d[v] = 0.0f;
      continue;
    }
    const float mx = stats[2 * n], log_sum = stats[2 * n + 1];
#pragma omp simd
    for (int64_t v = 0; v < V; ++v) d[v] = vexp((l[v] - mx) - log_sum) * dloss;
    const int64_t t = static_cast<int64_t>(targets[n]) - v0;
    if (t >= 0 && t < V) d[t] -= dloss;
  }
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
