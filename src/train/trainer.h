#pragma once
// The training loop: data, micro-batches with gradient accumulation, clipping, schedule,
// validation, checkpoints, resume.
#include <string>

#include "train/run_config.h"

namespace parallama {

struct TrainOptions {
  std::string resume;   // a checkpoint directory to continue from ("" = start fresh)
  int64_t stop_at = 0;  // stop after this step with a checkpoint (0 = run to train.steps)
};

// Returns the process exit code. Throws Error for anything a user must fix.
int train(const RunConfig& cfg, const TrainOptions& opt);

// Mean loss of a model over every sample of a token file, in order (the last partial batch is
// padded with ignored targets). Used by validation and `parallama eval`.
struct EvalResult {
  double loss = 0.0;
  int64_t tokens = 0;
};
class Llama;
class ParamBuffer;
class DataLoader;
EvalResult evaluate(Llama& model, const ParamBuffer& params, const std::vector<int32_t>& tokens,
                    int64_t max_batches);

}  // namespace parallama
