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

SyncConfig sync_config(const RunConfig& cfg) {
  SyncConfig s;
  s.parallel = cfg.parallel;
  s.grad_clip = cfg.train.grad_clip;
  s.optim = cfg.optim;
  s.steps = cfg.train.steps;
  return s;
}

TrainState::TrainState(const RunConfig& cfg, const ModelShard& shard, comm::Group tp)
    : layout(trainable(cfg.model), shard),
      params(layout),
      grads(layout),
      optim(layout, cfg.optim),
      model(layout, cfg.train.batch_size, cfg.train.seq_len, tp),
      replica{params, grads, optim, tp} {
  init_params(params, cfg.train.seed);
}

TrainState::TrainState(const RunConfig& cfg)
    : TrainState(cfg, ModelShard::whole(cfg.model), comm::Group()) {}

double TrainState::forward_backward(const int32_t* tokens, const int32_t* targets, int micro,
                                    int64_t valid_total, Synchronizer& sync) {
  const int64_t BT = model.batch() * model.seq_len();
  // A batch whose targets are all ignored has no loss and no gradient (not a division by zero).
  const float scale = valid_total > 0 ? 1.0f / static_cast<float>(valid_total) : 0.0f;
  grads.zero();
  double loss_sum = 0.0;
  for (int k = 0; k < micro; ++k) {
    model.forward(params, tokens + k * BT, targets + k * BT);
    loss_sum += model.loss_sum();
    if (k + 1 < micro) {
      model.backward(params, grads, scale);  // accumulate locally
    } else {
      sync.before_last_backward();
      model.backward(params, grads, scale, sync.hook());
    }
  }
  return loss_sum;
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
