#pragma once
// parallel.pp_balance = "measure": the pipeline's stage boundaries from parts of a training step
// timed on this machine instead of estimated from FLOPs.
#include "comm/group.h"
#include "parallel/mesh.h"
#include "train/run_config.h"

namespace parallama {

// Seconds per token of the embedding, of one transformer layer (the layers are alike) and of the
// head with its loss, forward and backward, on one micro-batch of the run's shape, precision and
// recompute. Rank 0 of `group` times a one-layer model of the run's dimensions (a warm-up step,
// then two, through the step profiler) and every rank of `group` receives its figures (a
// collective), so that all split the pipeline alike.
StageCosts measure_stage_costs(const RunConfig& cfg, comm::Group& group);

}  // namespace parallama
