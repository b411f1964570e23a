#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"

namespace parallama {

OptimKind parse_optim_kind(const std::string& name) {
  if (const auto k = value_named<OptimKind>(name)) return *k;
  throw Error("unknown optimizer '" + name + "' (choose adamw or sgd)");
}

const char* optim_kind_name(OptimKind k) {
  return name_of(k);
}

void OptimConfig::validate() const {
  if (!(lr >= 0.0f) || !std::isfinite(lr)) throw Error("optim.lr must be a non-negative number");
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
    throw Error("optim.beta1 and optim.beta2 must lie in [0, 1)");
  if (!(eps > 0.0f)) throw Error("optim.eps must be positive");
  if (!(weight_decay >= 0.0f)) throw Error("optim.weight_decay must be non-negative");
  if (!(momentum >= 0.0f && momentum < 1.0f)) throw Error("optim.momentum must lie in [0, 1)");
  if (!(dampening >= 0.0f && dampening <= 1.0f)) throw Error("optim.dampening must lie in [0, 1]");
}

Optimizer::Optimizer(const ParamLayout& layout, const OptimConfig& cfg,
                     std::optional<std::vector<OwnedRun>> owned)
    : cfg_(cfg), layout_(&layout) {
  cfg.validate();
  adamw_ = cfg.name == OptimKind::adamw;
  all_ = !owned;
  owned_ = all_ ? std::vector<OwnedRun>{{0, layout.total(), 0}} : std::move(*owned);
  int64_t end = 0;
  for (const OwnedRun& r : owned_) {
    if (r.begin < end || r.end < r.begin || r.end > layout.total() || r.at != size_)
      throw Error("optimizer: owned runs must be ordered, disjoint and packed");
    end = r.end, size_ += r.end - r.begin;
  }
  m_.resize(static_cast<size_t>(size_));
  if (adamw_) v_.resize(static_cast<size_t>(size_));
}

void Optimizer::update_run(ParamBuffer& params, const OwnedRun& r, const float* g, int64_t g_origin,
                           float lr, int64_t lo, int64_t hi, float grad_scale) {
  lo = std::max(lo, r.begin), hi = std::min(hi, r.end);
  if (lo >= hi) return;
  const auto& specs = params.layout().specs();
  // The first tensor that ends after lo, then every tensor until hi.
  auto it = std::upper_bound(specs.begin(), specs.end(), lo,
                             [](int64_t x, const ParamSpec& s) { return x < s.offset + s.numel; });
  for (; it != specs.end() && it->offset < hi; ++it) {
    const ParamSpec& s = *it;
    const int64_t a = std::max(lo, s.offset), b = std::min(hi, s.offset + s.numel);
    if (a >= b) continue;
    const int64_t st = r.at + (a - r.begin);  // the state offset of a
    const float* ga = g + (a - g_origin);
    const float wd = s.weight_decay() ? cfg_.weight_decay : 0.0f;
    if (adamw_) {
      const kernels::AdamWHyper h{lr, cfg_.beta1, cfg_.beta2, cfg_.eps, wd, step_, grad_scale};
      kernels::adamw_update(params.data() + a, m_.data() + st, v_.data() + st, ga, b - a, h);
    } else {
      const kernels::SGDHyper h{lr,         cfg_.momentum, cfg_.dampening, wd, cfg_.nesterov,
                                step_ == 1, grad_scale};
      kernels::sgd_update(params.data() + a, m_.data() + st, ga, b - a, h);
    }
  }
}

void Optimizer::step(ParamBuffer& params, const ParamBuffer& grads, float lr, int64_t lo,
                     int64_t hi, float grad_scale) {
  if (!all_) throw Error("optimizer: a sharded optimizer steps from its own gradient shard");
  if (hi < 0) hi = params.size();
  ++step_;
  update_run(params, owned_[0], grads.data(), 0, lr, lo, hi, grad_scale);
}

void Optimizer::step_owned(ParamBuffer& params, const std::vector<const float*>& run_grads,
                           float lr, float grad_scale,
                           const std::function<void(size_t)>& each_run) {
  if (run_grads.size() != owned_.size())
    throw Error("optimizer: one gradient pointer per owned run needed");
  ++step_;
  for (size_t i = 0; i < owned_.size(); ++i) {
    const OwnedRun& r = owned_[i];
    update_run(params, r, run_grads[i], r.begin, lr, r.begin, r.end, grad_scale);
    if (each_run) each_run(i);
  }
}

}  // namespace parallama
