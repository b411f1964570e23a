#pragma once
// One training step, shared by `train` and `bench` so both do and measure the same work: zero
// the gradients, forward and backward over the micro-batches (the last backward hands finished
// gradients to the synchronizer), then the synchronizer reduces, clips and updates.
#include <cstdint>
#include <memory>

#include "model/llama.h"
#include "optim/optimizer.h"
#include "parallel/mesh.h"
#include "parallel/pipeline.h"
#include "parallel/sync.h"
#include "plan/plan.h"
#include "train/loss_scale.h"
#include "train/run_config.h"

namespace parallama {

// The part of a run's configuration that gradient synchronization needs.
SyncConfig sync_config(const RunConfig& cfg);

class TrainState {
 public:
  // This rank's part of the model on the mesh: its tensor-parallel slice of its pipeline stage.
  TrainState(const RunConfig& cfg, const Mesh& mesh);
  // The whole model in one process.
  explicit TrainState(const RunConfig& cfg);
  TrainState(const TrainState&) = delete;
  TrainState& operator=(const TrainState&) = delete;

  // Zeroes the gradients, then runs forward and backward over `micro` micro-batches of (B, T)
  // laid end to end in tokens and targets (micro · B · T each): one after the other, or through
  // the pipeline's schedule. The gradients are those of the mean loss over `valid_total` targets
  // (all of the global batch's), times the loss scale (fp16). Returns the sum of the losses of
  // this rank's targets (through a pipeline: of the replica's, on every stage).
  // step: the step's number (from 1), for what the synchronizer does by step (compress_after).
  double forward_backward(const int32_t* tokens, const int32_t* targets, int micro,
                          int64_t valid_total, Synchronizer& sync, int64_t step = 1);
  // After forward_backward: the synchronizer sums, unscales, clips and updates (or, with fp16,
  // skips a step whose gradients overflowed); then the loss scale is updated.
  SyncStep update(Synchronizer& sync, float lr, int64_t step);

  ParamLayout layout;
  ParamBuffer params, grads;
  ZeroPlan zero;  // --zero 1 or 2: this rank's pieces of the gradient buckets (else empty)
  Optimizer optim;
  Llama model;
  LossScaler scaler;  // fp16: dynamic loss scaling; otherwise disabled (scale 1)
  Replica replica;
  std::unique_ptr<Pipeline> pipeline;  // with --pp above 1
};

// The planner's input for a run's configuration (fp32; set precision for another).
PlanInput plan_input(const RunConfig& cfg);

// Refuses, naming the memory it needs, a run whose ranks on this machine would not fit in its
// memory (by the planner's count of what a rank allocates), before anything is allocated.
void check_memory(const RunConfig& cfg);
// This machine's memory in bytes: physical memory, or a smaller cgroup limit.
double machine_memory_bytes();

// Sets the OpenMP thread count and returns the count in use. 0: OMP_NUM_THREADS if set, else
// the machine's cores divided by the ranks started on this machine.
int configure_threads(int threads);

}  // namespace parallama
