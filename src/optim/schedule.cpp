#include "optim/schedule.h"

#include <cmath>

namespace parallama {

float lr_at(int64_t step, float lr, float min_lr, int64_t warmup, int64_t total) {
  if (warmup > 0 && step <= warmup)
    return lr * static_cast<float>(step) / static_cast<float>(warmup);
  if (step >= total) return min_lr;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
  return static_cast<float>(min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress)));
}

double grad_norm(const ParamBuffer& grads) {
  return std::sqrt(grad_sq_sum(grads, true));
}

double grad_sq_sum(const ParamBuffer& grads, bool replicated) {
  double total = 0.0;
  grads.visit([&](const ParamSpec& s, const float* g) {
    if (s.tied_copy || (s.split_axis < 0 && !replicated)) return;
    double ss = 0.0;
#pragma omp parallel for simd reduction(+ : ss) schedule(static)
    for (int64_t i = 0; i < s.numel; ++i) ss += static_cast<double>(g[i]) * g[i];
    total += ss;
  });
  return total;
}

float clip_factor(double norm, float max_norm) {
  if (max_norm <= 0.0f || !(norm > max_norm)) return 1.0f;
  return static_cast<float>(max_norm / norm);
}

float clip_grads(ParamBuffer& grads, double norm, float max_norm) {
  const float scale = clip_factor(norm, max_norm);
  if (scale == 1.0f) return 1.0f;
  float* g = grads.data();
  const int64_t n = grads.size();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) g[i] *= scale;
  return scale;
}

double global_grad_norm(const ParamBuffer& grads, comm::Group& model, bool counts_replicated) {
  if (model.size() == 1) return grad_norm(grads);
  return std::sqrt(model.sum(grad_sq_sum(grads, counts_replicated)));
}

}  // namespace parallama
