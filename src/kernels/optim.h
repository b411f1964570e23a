#pragma once
// Optimizer updates over flat ranges of a parameter buffer.
#include <cstdint>

namespace parallama::kernels {

struct AdamWHyper {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;             // 1 for the first update (bias correction)
  float grad_scale = 1.0f;  // g is used as g · grad_scale (global-norm clipping, fused)
};

// AdamW with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW:
// p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
// p ← p − lr/(1−β1ᵗ) · m / (√v / √(1−β2ᵗ) + eps)
// p, m, v (n) updated in place; g (n)
void adamw_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamWHyper& h);

struct SGDHyper {
  float lr, momentum, dampening, weight_decay;
  bool nesterov;
  bool first_step;          // the momentum buffer starts as the first gradient
  float grad_scale = 1.0f;  // g is used as g · grad_scale
};

// SGD with momentum, as torch.optim.SGD: d = g + wd·p; buf ← first ? d : μ·buf + (1−τ)·d;
// p ← p − lr · (nesterov ? d + μ·buf : buf). p, buf (n) in place; g (n)
void sgd_update(float* p, float* buf, const float* g, int64_t n, const SGDHyper& h);

}  // namespace parallama::kernels
