#pragma once
// `parallama plan`: a run configuration's layout planned (plan/plan.h) and printed per rank group,
// or as JSON.
#include <string>

#include "plan/plan.h"
#include "train/run_config.h"

namespace parallama {

// `plan`: the device and the precision (fp32 | bf16) the planner assumes.
struct PlanOptions {
  Device device;
  std::string precision = "fp32";
};
int run_plan(const RunConfig& cfg, const PlanOptions& opt, bool json);

}  // namespace parallama
