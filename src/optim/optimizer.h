#pragma once
// Optimizers over flat parameter buffers: the moments share the parameters' layout, so a ZeRO
// shard or a checkpoint tensor of optimizer state is the same offset as the parameter's.
#include <cstdint>
#include <optional>
#include <string>

#include "kernels/optim.h"
#include "model/params.h"

namespace parallama {

struct OptimConfig {
  std::string name = "adamw";  // adamw | sgd
  float lr = 3e-4f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;  // applied to matrices only (not norms, not the embedding)
  float momentum = 0.9f, dampening = 0.0f;
  bool nesterov = false;
  int64_t warmup_steps = 0;  // linear warmup, then cosine decay to min_lr
  float min_lr = 0.0f;
  void validate() const;
};

class Optimizer {
 public:
  Optimizer(const ParamLayout& layout, const OptimConfig& cfg);
  // One update with learning rate lr (the schedule lives with the trainer) of the parameters at
  // flat offsets [lo, hi) (hi < 0: to the end), e.g. the slice a parameter server owns.
  // grad_scale multiplies every gradient as it is read (clipping without a pass of its own).
  void step(ParamBuffer& params, const ParamBuffer& grads, float lr, int64_t lo = 0,
            int64_t hi = -1, float grad_scale = 1.0f);
  // The state, shaped like the parameters: exp_avg (or the momentum buffer) and exp_avg_sq.
  ParamBuffer& state(int i) { return i == 0 ? m_ : *v_; }
  const ParamBuffer& state(int i) const { return i == 0 ? m_ : *v_; }
  int num_states() const { return v_ ? 2 : 1; }
  // The name of state i, as checkpoints store it: "exp_avg", "exp_avg_sq" (AdamW) or "momentum".
  const char* state_name(int i) const {
    return v_ ? (i == 0 ? "exp_avg" : "exp_avg_sq") : "momentum";
  }
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  const OptimConfig& config() const { return cfg_; }

 private:
  OptimConfig cfg_;
  ParamBuffer m_;                 // first moment (AdamW) or momentum buffer (SGD)
  std::optional<ParamBuffer> v_;  // second moment (AdamW only)
  int64_t step_ = 0;
};

}  // namespace parallama
