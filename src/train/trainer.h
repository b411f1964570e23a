#pragma once
// The training loop: data, micro-batches with gradient accumulation, clipping, schedule,
// validation, checkpoints, resume.
#include <string>
#include <vector>

#include "comm/group.h"
#include "train/run_config.h"

namespace parallama {

struct TrainOptions {
  std::string resume;   // a checkpoint directory to continue from ("" = start fresh)
  int64_t stop_at = 0;  // stop after this step with a checkpoint (0 = run to train.steps)
};

// Trains on the processes of `world` (size 1: one process) with the --sync strategy of the
// config; with a parameter server the last ranks serve. Only rank 0 writes logs,
// metrics and checkpoints. Returns the exit code; throws Error for anything a user must fix.
int train(const RunConfig& cfg, const TrainOptions& opt, comm::Group world);

// Mean loss over the first max_samples sequences of a token file (0 = all), in order; the last
// partial batch is padded with ignored targets. Batches are shared round-robin over the group,
// so every layout evaluates the same sequences; the result is the global mean. Used by
// validation and `parallama eval`.
struct EvalResult {
  double loss = 0.0;
  int64_t tokens = 0;
};
class Llama;
class ParamBuffer;
EvalResult evaluate(Llama& model, const ParamBuffer& params, const std::vector<int32_t>& tokens,
                    int64_t max_samples, comm::Group& group);

// Throws Error naming the ranks whose parameters differ from rank 0's.
void check_same_params(const ParamBuffer& params, comm::Group& group);

}  // namespace parallama
