#pragma once
// One training step over a whole-model shard: zero gradients, forward, backward, optimizer.
// Shared by `train` and `bench` so both measure the same work.
#include <cstdint>
#include <memory>

#include "model/llama.h"
#include "optim/optimizer.h"
#include "train/run_config.h"

namespace parallama {

class TrainState {
 public:
  explicit TrainState(const RunConfig& cfg);
  // tokens, targets (B, T). Returns the mean loss of the batch.
  float step(const int32_t* tokens, const int32_t* targets, float lr);

  ParamLayout layout;
  ParamBuffer params, grads;
  Optimizer optim;
  Llama model;
};

// Sets the OpenMP thread count and returns the count in use. 0: OMP_NUM_THREADS if set, else
// the machine's cores divided by the ranks started on this machine.
int configure_threads(int threads);

}  // namespace parallama
