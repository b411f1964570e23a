#pragma once
// Gradient synchronization strategies, chosen with --sync:
//   allreduce  synchronous SGD: gradients summed by bucketed all-reduce overlapping backward;
//              with --zero 1 or 2 (ZeRO) reduce-scattered instead, each rank updating its piece
//              of every bucket, then the parameters all-gathered (see parallel/zero.h)
//   ps         parameter server: the last ps.servers ranks own contiguous slices of the flat
//              parameters and their optimizer state; workers push gradients, pull parameters
//   ps-async   the same, each push applied on arrival; a worker may run at most
//              ps.max-staleness steps ahead of the slowest
//   local      local SGD: every worker steps alone, parameters averaged every local.period steps
//   diloco     inner AdamW for diloco.inner-steps, then an outer Nesterov SGD step on the
//              averaged parameter change
#include <functional>
#include <memory>

#include <nlohmann/json.hpp>

#include "comm/group.h"
#include "optim/optimizer.h"
#include "parallel/config.h"
#include "parallel/data_parallel.h"
#include "parallel/zero.h"

namespace parallama {

// What a synchronizer works on: this rank's parameters, gradients and optimizer, and how the
// model is shared within the replica.
struct Replica {
  ParamBuffer& params;
  ParamBuffer& grads;
  Optimizer& optim;
  comm::Group model;  // the ranks sharing one copy of the model (tp × pp): norms sum over them
  bool counts_replicated = true;  // tensor-parallel rank 0 counts the replicated tensors
  // A tied embedding on two pipeline stages: the gradients at [tied_offset, + tied_numel) are
  // summed over `tied` after the data-parallel reduction, so both copies step alike.
  comm::Group tied;
  int64_t tied_offset = 0, tied_numel = 0;
  // ZeRO (stage 1 or 2): the division of the gradient buckets over the data-parallel group that
  // optim was built with (its owned runs are plan->runs).
  int zero_stage = 0;
  const ZeroPlan* zero = nullptr;
  // Loss scaling (fp16): the gradients are `1 / unscale` times too large (set before backward);
  // with skip_nonfinite a step whose global gradient norm is inf or NaN is skipped
  // (SyncStep::skipped) on every rank.
  float unscale = 1.0f;
  bool skip_nonfinite = false;
};

// Who does what. Servers are the last ranks of the world. `workers` is the data-parallel group
// of this rank (the ranks that hold the same part of the model); `all_workers` every worker.
struct Roles {
  comm::Group world, workers, all_workers;
  bool server = false;
  int num_workers = 1, num_servers = 0;
};
Roles make_roles(comm::Group world, const SyncConfig& cfg);

// The slice [lo, hi) of the flat buffer that server s owns.
std::pair<int64_t, int64_t> server_slice(int64_t total, int servers, int s);

struct SyncStep {
  double grad_norm = 0;  // of the unscaled gradients
  bool skipped = false;  // the gradients overflowed: no update (see Replica::skip_nonfinite)
  nlohmann::json extra = nlohmann::json::object();  // strategy-specific metrics
};

// DiLoCo's outer parameters and outer momentum (the same on every worker) and its compressed
// outer gradient's residual (each worker's own); empty where the run keeps none.
struct WorkerState {
  std::vector<float> outer, momentum, residual;
};

class Synchronizer {
 public:
  virtual ~Synchronizer() = default;
  // true: gradients are summed over workers, so backward scales by 1 / (targets of all
  // workers) and the loss is the global mean; false: each worker uses its own mean.
  virtual bool global_batch() const { return true; }
  // Called around the backward pass of the last micro-batch of step `step` (from 1); the hook
  // sees finished gradients.
  virtual void before_last_backward(int64_t /*step*/) {}
  virtual std::function<void(int64_t)> hook() { return {}; }
  // true: update() leaves the gradient buffer zeroed (ZeRO-2 releases it), no need to zero it.
  virtual bool leaves_gradients_zero() const { return false; }
  // Bytes of gradients kept apart from the gradient buffer (ZeRO: this rank's summed shard).
  virtual int64_t gradient_shard_bytes() const { return 0; }
  // After backward: synchronize, clip, update with learning rate lr.
  virtual SyncStep update(Replica& st, float lr, int64_t step) = 0;
  // Before rank 0 writes a checkpoint of this step: bring the optimizer state home (the
  // servers send it at the same steps).
  virtual void gather_state(Replica&, int64_t) {}
  // Before update(): every worker agreed that this step is the run's last (a signal stops it
  // early); the parameter servers of --sync ps then send their state and end with it.
  virtual void set_last_step() {}
  // A stop signal that a rank outside the workers (a parameter server) received, 0 if none.
  virtual int peer_signal() const { return 0; }
  // The bucketed gradient reduction (--sync allreduce, with or without ZeRO), whose compression
  // state checkpoints keep; null for the other strategies.
  virtual GradReducer* reducer() { return nullptr; }
  // --sync local and diloco: what a worker keeps besides the replica's parameters and optimizer
  // (which differ between workers from one meeting to the next), for checkpoints; null for the
  // other strategies.
  virtual WorkerState* worker_state() { return nullptr; }
};

std::unique_ptr<Synchronizer> make_synchronizer(const SyncConfig& cfg, Roles& roles, Replica& st);

// Throws Error naming the step and the ranks when the ranks of `replicas` (data-parallel ranks
// that hold the same part of the model) do not hold bit-identical parameters: a fingerprint of
// every byte, gathered. For parallel.check_collectives under --sync allreduce, after each step.
void check_replicas_equal(const ParamBuffer& params, comm::Group& replicas, int64_t step);

// The server side of ps and ps-async: runs until the workers are done. Checkpoint steps (for
// sending the optimizer state to rank 0) are those of the workers' schedule.
struct ServerSchedule {
  int64_t first_step, last_step;
  std::function<bool(int64_t)> is_checkpoint;
  std::function<int()> signal;  // a stop signal this server received (0: none), passed on
};
// Returns the last step served: sched.last_step, or an earlier one that the workers (--sync ps)
// marked as their last.
int64_t run_parameter_server(const SyncConfig& cfg, Roles& roles, Replica& st,
                             const ServerSchedule& sched);

}  // namespace parallama
