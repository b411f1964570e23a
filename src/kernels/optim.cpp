#include "kernels/optim.h"
#include "tensor/profile.h"

#include <cmath>

namespace parallama::kernels {

void adamw_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamWHyper& h) {
  prof::KindScope scope(prof::Kind::optimizer);
  const float bc1 = 1.0f - std::pow(h.beta1, static_cast<float>(h.step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(h.beta2, static_cast<float>(h.step)));
  const float step_size = h.lr / bc1, decay = 1.0f - h.lr * h.weight_decay;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * h.grad_scale;
    const float mi = h.beta1 * m[i] + (1.0f - h.beta1) * gi;
    const float vi = h.beta2 * v[i] + (1.0f - h.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) / bc2_sqrt + h.eps);
  }
}

void sgd_update(float* p, float* buf, const float* g, int64_t n, const SGDHyper& h) {
  prof::KindScope scope(prof::Kind::optimizer);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float d = g[i] * h.grad_scale + h.weight_decay * p[i];
    float step = d;
    if (h.momentum != 0.0f) {
      const float b = h.first_step ? d : h.momentum * buf[i] + (1.0f - h.dampening) * d;
      buf[i] = b;
      step = h.nesterov ? d + h.momentum * b : b;
    }
    p[i] -= h.lr * step;
  }
}

}  // namespace parallama::kernels
