#pragma once
// `parallama plan`: a run configuration's layout planned (plan/plan.h) and printed per rank group,
// or as JSON.
#include <string>
#include <vector>

#include "plan/auto_layout.h"
#include "plan/plan.h"
#include "train/run_config.h"

namespace parallama {

// `plan`: the device and the precision (fp32 | bf16) the planner assumes.
struct PlanOptions {
  Device device;
  std::string precision = "fp32";
  std::string profile;  // a machine profile (plan/profile.h); the device flags given override it
  std::vector<std::string> given;  // the device flags given ("--link-gbps", ...)
  bool force = false;              // calibrate: replace --out
  // --auto: search every layout for hosts × ranks_per_host ranks (0: the configuration's
  // dp · tp · pp on one host) at global_batch sequences a step (0: the configuration's).
  bool auto_layout = false, any_precision = false;
  int hosts = 1, ranks_per_host = 0;
  int64_t global_batch = 0;
};
// The device a plan assumes: the flags', or a profile's measurements (the flags given override
// them; --device-tflops or --compute-efficiency give up its measured GEMM rates). Error for a
// value out of range or a profile that cannot be read.
Device plan_device(const PlanOptions& opt, Precision p);
int run_plan(const RunConfig& cfg, const PlanOptions& opt, bool json);
// The automatic search's input for a run's configuration and the plan options (their hosts,
// ranks and global batch, or the configuration's).
AutoInput auto_input(const RunConfig& cfg, const PlanOptions& opt);

}  // namespace parallama
