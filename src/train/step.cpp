#include "train/step.h"

#include <omp.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "comm/launcher.h"
#include "plan/plan.h"
#include "tensor/error.h"

namespace parallama {

double machine_memory_bytes() {
  double bytes = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  std::ifstream limit("/sys/fs/cgroup/memory.max");
  double v = 0;
  if (limit >> v && v > 0) bytes = std::min(bytes, v);  // "max" reads as no number
  return bytes;
}

PlanInput plan_input(const RunConfig& cfg) {
  PlanInput in;
  in.model = cfg.model;
  in.shape = mesh_shape(cfg);
  in.schedule = cfg.parallel.layout.pp_schedule;
  in.batch = cfg.train.batch_size;
  in.seq_len = cfg.train.seq_len;
  in.micro_batches = cfg.train.micro_batches;
  in.zero = cfg.parallel.grads.zero;
  in.recompute = cfg.train.recompute;
  in.moments = cfg.optim.name == OptimKind::adamw ? 2 : 1;
  in.bucket_mb = cfg.parallel.grads.bucket_mb;
  in.sparse_embedding = cfg.parallel.grads.sparse_embedding &&
                        cfg.parallel.strategy.sync == Sync::allreduce &&
                        cfg.parallel.grads.compress == Compress::none;
  in.compress = cfg.parallel.grads.compress;
  in.powersgd_rank = cfg.parallel.grads.powersgd_rank;
  return in;
}

void check_memory(const RunConfig& cfg) {
  const Plan plan = make_plan(plan_input(cfg), Device{});
  const RankGroup& g = plan.groups[plan.largest];
  const int ranks = comm::local_ranks();
  const double need = g.memory() * ranks, have = machine_memory_bytes();
  if (need <= have) return;
  char line[480];
  std::snprintf(line, sizeof line,
                "a micro-batch of %d x %d tokens needs about %.1f GB per rank (parameters %.2f, "
                "gradients %.2f, optimizer %.2f, activations %.1f GB)%s, more than this "
                "machine's %.1f GB; lower train.batch_size or train.seq_len, set train.recompute "
                "= \"full\", or spread the model with --tp or --pp",
                cfg.train.batch_size, cfg.train.seq_len, g.memory() / 1e9, g.state.params / 1e9,
                g.state.grads / 1e9, g.state.optimizer / 1e9, g.activations / 1e9,
                ranks > 1 ? (", " + std::to_string(ranks) + " ranks here").c_str() : "",
                have / 1e9);
  throw Error(line);
}

namespace {

// Refuses shape-only presets, and runs that cannot fit, before any memory is allocated for them.
const LlamaConfig& trainable(const RunConfig& cfg) {
  const LlamaConfig& c = cfg.model;
  if (c.shape_only)
    throw Error("preset '" + c.name + "' is a published shape for sizing only and is not " +
                "trained here; pick tiny, kjv-small or bench15m");
  check_memory(cfg);
  return c;
}

// ZeRO's division of the gradient buckets over the data-parallel group (the tied embedding in a
// bucket of its own, divided alike on both stages); empty without ZeRO.
ZeroPlan zero_plan(const RunConfig& cfg, const Mesh& mesh, const ParamLayout& layout) {
  if (cfg.parallel.grads.zero == 0) return {};
  int64_t alone = -1;
  if (mesh.tied.size() > 1) alone = layout.find("model.embed_tokens.weight").offset;
  const auto limit = static_cast<int64_t>(cfg.parallel.grads.bucket_mb * (1 << 20) / sizeof(float));
  return make_zero_plan(layout, mesh.dp.size(), mesh.dp.rank(), limit, alone);
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

TrainState::TrainState(const RunConfig& cfg, const Mesh& mesh)
    : layout(trainable(cfg), mesh.shard()),
      params(layout),
      grads(layout),
      zero(zero_plan(cfg, mesh, layout)),
      optim(layout, cfg.optim, cfg.parallel.grads.zero ? std::optional(zero.runs) : std::nullopt),
      model(layout, cfg.train.batch_size, cfg.train.seq_len, mesh.tp, cfg.train.recompute,
            cfg.train.precision),
      replica{params, grads, optim, mesh.replica, mesh.coord().tp == 0, mesh.tied} {
  init_params(params, cfg.train.seed);
  if (model.precision() == Precision::fp16) {
    scaler = LossScaler(cfg.train.loss_scale, cfg.train.loss_scale_window);
    replica.skip_nonfinite = true;
  }
  if (cfg.parallel.grads.zero > 0)
    replica.zero_stage = cfg.parallel.grads.zero, replica.zero = &zero;
  if (mesh.tied.size() > 1) {
    const ParamSpec& e = layout.find("model.embed_tokens.weight");
    replica.tied_offset = e.offset, replica.tied_numel = e.numel;
  }
  if (mesh.shape().pp > 1)
    pipeline = std::make_unique<Pipeline>(model, mesh.pp, cfg.parallel.layout.pp_schedule,
                                          cfg.parallel.layout.pp_virtual, cfg.train.micro_batches);
}

TrainState::TrainState(const RunConfig& cfg)
    : TrainState(cfg, Mesh(comm::Group(), MeshShape{}, cfg.model)) {}

double TrainState::forward_backward(const int32_t* tokens, const int32_t* targets, int micro,
                                    int64_t valid_total, Synchronizer& sync, int64_t step) {
  const int64_t BT = model.batch() * model.seq_len();
  // A batch whose targets are all ignored has no loss and no gradient (not a division by zero).
  float scale = valid_total > 0 ? 1.0f / static_cast<float>(valid_total) : 0.0f;
  if (scaler.enabled() && valid_total > 0)
    scale = static_cast<float>(scaler.scale() / static_cast<double>(valid_total));
  if (!sync.leaves_gradients_zero()) grads.zero();
  replica.unscale = static_cast<float>(1.0 / scaler.scale());  // what backward scales by
  if (pipeline) {
    sync.before_last_backward(step);
    return pipeline->step(params, grads, tokens, targets, scale, sync.hook());
  }
  double loss_sum = 0.0;
  for (int k = 0; k < micro; ++k) {
    model.forward(params, tokens + k * BT, targets + k * BT, true);
    loss_sum += model.loss_sum();
    if (k + 1 < micro) {
      model.backward(params, grads, scale);  // accumulate locally
    } else {
      sync.before_last_backward(step);
      model.backward(params, grads, scale, sync.hook());
    }
  }
  return loss_sum;
}

SyncStep TrainState::update(Synchronizer& sync, float lr, int64_t step) {
  replica.unscale = static_cast<float>(1.0 / scaler.scale());
  SyncStep out = sync.update(replica, lr, step);
  scaler.update(!out.skipped);
  return out;
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
