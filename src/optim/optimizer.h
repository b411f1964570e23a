#pragma once
// Optimizers over flat parameter buffers: the moments follow the parameters' flat layout, so a
// ZeRO shard or a checkpoint tensor of optimizer state is the same offset as the parameter's.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <functional>

#include "kernels/optim.h"
#include "model/params.h"
#include "tensor/names.h"

namespace parallama {

enum class OptimKind { adamw, sgd };
constexpr std::array<Named<OptimKind>, 2> names(OptimKind) {
  return {{{OptimKind::adamw, "adamw"}, {OptimKind::sgd, "sgd"}}};
}
// "adamw" | "sgd"; anything else is an Error naming the choices.
OptimKind parse_optim_kind(const std::string& name);
const char* optim_kind_name(OptimKind k);

struct OptimConfig {
  OptimKind name = OptimKind::adamw;
  float lr = 3e-4f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;  // applied to matrices only (not norms, not the embedding)
  float momentum = 0.9f, dampening = 0.0f;
  bool nesterov = false;
  int64_t warmup_steps = 0;  // linear warmup, then cosine decay to min_lr
  float min_lr = 0.0f;
  void validate() const;
};

// A run of flat offsets [begin, end) of the layout whose optimizer state this rank keeps, at
// [at, at + end - begin) of its state buffers (ZeRO: this rank's piece of each gradient bucket).
struct OwnedRun {
  int64_t begin = 0, end = 0, at = 0;
};

class Optimizer {
 public:
  // owned: the runs this rank keeps state for, in increasing order and without overlap; none
  // for all of the layout (then state offsets are flat offsets).
  Optimizer(const ParamLayout& layout, const OptimConfig& cfg,
            std::optional<std::vector<OwnedRun>> owned = std::nullopt);
  // One update with learning rate lr (the schedule lives with the trainer) of the parameters at
  // flat offsets [lo, hi) (hi < 0: to the end), e.g. the slice a parameter server owns; grads
  // hold the whole layout. Only for an optimizer that owns all of it.
  // grad_scale multiplies every gradient as it is read (clipping without a pass of its own).
  void step(ParamBuffer& params, const ParamBuffer& grads, float lr, int64_t lo = 0,
            int64_t hi = -1, float grad_scale = 1.0f);
  // One update of the owned parameters: the gradients of run r start at run_grads[r] (a
  // reduce-scatter's output). Calls each_run(r) once run r's parameters are final.
  void step_owned(ParamBuffer& params, const std::vector<const float*>& run_grads, float lr,
                  float grad_scale = 1.0f, const std::function<void(size_t)>& each_run = {});
  // The state, in state offsets: exp_avg (or the momentum buffer) and exp_avg_sq.
  float* state(int i) { return i == 0 ? m_.data() : v_.data(); }
  const float* state(int i) const { return i == 0 ? m_.data() : v_.data(); }
  int num_states() const { return adamw_ ? 2 : 1; }
  const std::vector<OwnedRun>& owned() const { return owned_; }
  bool owns_all() const { return all_; }
  int64_t state_size() const { return size_; }  // floats per state
  // Bytes of optimizer state this rank holds.
  int64_t state_bytes() const { return num_states() * size_ * int64_t{sizeof(float)}; }
  const ParamLayout& layout() const { return *layout_; }
  // The name of state i, as checkpoints store it: "exp_avg", "exp_avg_sq" (AdamW) or "momentum".
  const char* state_name(int i) const {
    return adamw_ ? (i == 0 ? "exp_avg" : "exp_avg_sq") : "momentum";
  }
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  const OptimConfig& config() const { return cfg_; }

 private:
  // The update of flat [lo, hi) ∩ run r, the gradient of flat offset x at g[x - g_origin].
  void update_run(ParamBuffer& params, const OwnedRun& r, const float* g, int64_t g_origin,
                  float lr, int64_t lo, int64_t hi, float grad_scale);
  OptimConfig cfg_;
  const ParamLayout* layout_;
  std::vector<OwnedRun> owned_;
  bool all_ = true, adamw_ = false;
  int64_t size_ = 0;
  Buffer m_;  // first moment (AdamW) or momentum buffer (SGD)
  Buffer v_;  // second moment (AdamW only)
  int64_t step_ = 0;
};

}  // namespace parallama
