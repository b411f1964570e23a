#include "train/step.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "comm/mpi/mpi_backend.h"
#include "tensor/error.h"

namespace parallama {

namespace {

// Refuses shape-only presets before any memory is allocated for them.
const LlamaConfig& trainable(const LlamaConfig& c) {
  if (c.shape_only)
    throw Error("preset '" + c.name + "' is a published shape for sizing only and is not " +
                "trained here; pick tiny, kjv-small or bench15m");
  return c;
}

}  // namespace

TrainState::TrainState(const RunConfig& cfg)
    : layout(trainable(cfg.model), ModelShard::whole(cfg.model)),
      params(layout),
      grads(layout),
      optim(layout, cfg.optim),
      model(layout, cfg.train.batch_size, cfg.train.seq_len) {
  init_params(params, cfg.train.seed);
}

float TrainState::step(const int32_t* tokens, const int32_t* targets, float lr) {
  grads.zero();
  const float loss = model.forward(params, tokens, targets);
  const int64_t valid = model.valid_targets();
  model.backward(params, grads, valid ? 1.0f / static_cast<float>(valid) : 0.0f);
  optim.step(params, grads, lr);
  return loss;
}

int configure_threads(int threads) {
  if (threads == 0 && !std::getenv("OMP_NUM_THREADS")) {
    // Share the machine's cores among the ranks placed on it.
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    threads = std::max(1, cores / comm::local_ranks());
  }
  if (threads > 0) omp_set_num_threads(threads);
  return omp_get_max_threads();
}

}  // namespace parallama
