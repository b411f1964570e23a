#pragma once
// --layout auto for train and bench: the planner's best layout (plan/auto_layout.h) for the
// processes the job was started with, and the prediction every run reports against what it
// measured.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "comm/group.h"
#include "plan/plan.h"
#include "train/run_config.h"

namespace parallama {

// The device a run predicts with: the profile at `profile` (plan/profile.h), else, when
// `measure`, a quick calibration of the job's machines (collective over world), else none.
std::optional<Device> run_device(const RunConfig& cfg, comm::Group& world,
                                 const std::string& profile, bool measure);

// The settings of the fastest layout that fits, for world's processes at cfg's global batch
// (dp · train.batch_size · train.micro_batches as cfg gives them) and precision; prints the choice
// and the runner-up, one line each (rank 0). Throws Error for a configuration that fixes its own
// layout (--tp, --pp, --zero, ...), a sync other than allreduce, or no layout that fits.
std::vector<std::pair<std::string, std::string>> auto_layout(const RunConfig& cfg,
                                                             comm::Group& world,
                                                             const Device& device);

// The planner's step time (null without a device) and memory per rank (parameters, gradients,
// optimizer state and activations, as bench counts them) for cfg, against the measured ones:
// {"predicted": {...}, "measured": {...}, "ratio": {"step_s", "memory_bytes"}} (ratio: measured
// over predicted; memory on the rank the plan gives the most). Sets *line to one line saying so.
nlohmann::json prediction_json(const RunConfig& cfg, const std::optional<Device>& device,
                               double measured_step_s, const std::vector<double>& memory_per_rank,
                               std::string* line);

}  // namespace parallama
