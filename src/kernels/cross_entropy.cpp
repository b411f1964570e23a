#include "kernels/cross_entropy.h"

#include <cmath>

namespace parallama::kernels {

void cross_entropy_forward(float* losses, float* stats, const float* logits, const int32_t* targets,
                           int64_t N, int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits + n * V;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t v = 0; v < V; ++v) mx = std::fmax(mx, l[v]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t v = 0; v < V; ++v) sum += std::exp(l[v] - mx);
    const float log_sum = std::log(sum);
    stats[2 * n] = mx;
    stats[2 * n + 1] = log_sum;
    losses[n] = targets[n] == kIgnoreIndex ? 0.0f : log_sum + (mx - l[targets[n]]);
  }
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* stats,
                            const int32_t* targets, float dloss, int64_t N, int64_t V) {
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
    for (int64_t v = 0; v < V; ++v) d[v] = std::exp((l[v] - mx) - log_sum) * dloss;
    d[targets[n]] -= dloss;
  }
}

}  // namespace parallama::kernels
