#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"

namespace parallama {

void OptimConfig::validate() const {
  if (name != "adamw" && name != "sgd")
    throw Error("unknown optimizer '" + name + "' (choose adamw or sgd)");
  if (!(lr >= 0.0f) || !std::isfinite(lr)) throw Error("optim.lr must be a non-negative number");
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
    throw Error("optim.beta1 and optim.beta2 must lie in [0, 1)");
  if (!(eps > 0.0f)) throw Error("optim.eps must be positive");
  if (!(weight_decay >= 0.0f)) throw Error("optim.weight_decay must be non-negative");
  if (!(momentum >= 0.0f && momentum < 1.0f)) throw Error("optim.momentum must lie in [0, 1)");
  if (!(dampening >= 0.0f && dampening <= 1.0f)) throw Error("optim.dampening must lie in [0, 1]");
}

Optimizer::Optimizer(const ParamLayout& layout, const OptimConfig& cfg) : cfg_(cfg), m_(layout) {
  cfg.validate();
  if (cfg.name == "adamw") v_.emplace(layout);
}

void Optimizer::step(ParamBuffer& params, const ParamBuffer& grads, float lr, int64_t lo,
                     int64_t hi, float grad_scale) {
  if (hi < 0) hi = params.size();
  ++step_;
  for (const ParamSpec& s : params.layout().specs()) {
    const int64_t a = std::max(lo, s.offset), b = std::min(hi, s.offset + s.numel);
    if (a >= b) continue;
    const float wd = s.weight_decay() ? cfg_.weight_decay : 0.0f;
    if (v_) {
      const kernels::AdamWHyper h{lr, cfg_.beta1, cfg_.beta2, cfg_.eps, wd, step_, grad_scale};
      kernels::adamw_update(params.data() + a, m_.data() + a, v_->data() + a, grads.data() + a,
                            b - a, h);
    } else {
      const kernels::SGDHyper h{lr,         cfg_.momentum, cfg_.dampening, wd, cfg_.nesterov,
                                step_ == 1, grad_scale};
      kernels::sgd_update(params.data() + a, m_.data() + a, grads.data() + a, b - a, h);
    }
  }
}

}  // namespace parallama
