#pragma once
// The training loop: data, micro-batches with gradient accumulation, clipping, schedule,
// validation, checkpoints, resume.
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "comm/group.h"
#include "plan/plan.h"
#include "train/run_config.h"

namespace parallama {

struct TrainOptions {
  // A checkpoint directory, a run directory (its latest checkpoint), or "auto" (train.out_dir's
  // latest checkpoint, or a fresh start when it has none); "" = start fresh (see train/run_dir.h).
  std::string resume;
  bool force = false;  // start fresh even where train.out_dir holds another run's checkpoints
  // A fresh start from this checkpoint's weights (a pretrained or converted model): fine-tuning.
  // The optimizer, step and data position start anew. Ignored when a checkpoint is resumed.
  std::string init;
  int64_t stop_at = 0;  // stop after this step with a checkpoint (0 = run to train.steps)
  // Rewrite out_dir/report.html (train/report.h) every this many steps and at the end; 0 = never.
  // The ranks measure the GEMM peak first, for the report's MFU.
  int64_t report_every = 0;
  // The planner's device (a machine profile) the run predicts its step time with; none: only its
  // memory is predicted (train/auto_run.h).
  std::optional<Device> device;
};

// The exit code of a run stopped by SIGTERM, SIGINT
// or SIGUSR1 (EX_TEMPFAIL: run it again with --resume auto to continue).
inline constexpr int kExitPreempted = 75;

// Trains on the processes of `world` (size 1: one process) with the --sync strategy of the
// config; with a parameter server the last ranks serve. Only rank 0 writes logs,
// metrics and checkpoints. Returns the exit code; throws Error for anything a user must fix.
int train(const RunConfig& cfg, const TrainOptions& opt, comm::Group world);

// Mean loss over the first max_samples sequences of a token file (0 = all), in batches of the
// model's B sequences, in order; the last partial batch is padded with ignored targets. Batch b
// is evaluated by rank b mod group.size() alone, so the ranks share the work and every layout
// evaluates the same sequences; every rank gets the mean over all their targets. Used by
// validation and `parallama eval`.
struct EvalResult {
  double loss = 0.0;         // mean over the targets of every rank
  int64_t tokens = 0;        // targets evaluated by all ranks together
  int64_t local_tokens = 0;  // ... by this rank
  int64_t local_batches = 0;
};
class Llama;
class ParamBuffer;
EvalResult evaluate(Llama& model, const ParamBuffer& params, const std::vector<int32_t>& tokens,
                    int64_t max_samples, comm::Group& group);
// The same with any forward pass: batch_loss(tokens, targets) of one (B, T) batch returns its
// (loss sum, valid targets), e.g. through every pipeline stage.
using BatchLoss = std::function<std::pair<double, int64_t>(const int32_t*, const int32_t*)>;
EvalResult evaluate(const BatchLoss& batch_loss, int64_t B, int64_t T,
                    const std::vector<int32_t>& tokens, int64_t max_samples, comm::Group& group);

// Throws Error naming the ranks whose parameters differ from rank 0's.
void check_same_params(const ParamBuffer& params, comm::Group& group);

}  // namespace parallama
