#pragma once
// Subcommands of the parallama program.
#include <string>

#include "comm/group.h"
#include "infer/generate.h"
#include "plan/plan.h"
#include "train/run_config.h"

namespace parallama {

// profile: also print where the time of a step goes (tensor/profile.h).
int run_bench(const RunConfig& cfg, bool json, comm::Group dp, bool profile = false);
int run_info(const RunConfig& cfg);
// `plan`: the device and the precision (fp32 | bf16) the planner assumes.
struct PlanOptions {
  Device device;
  std::string precision = "fp32";
};
int run_plan(const RunConfig& cfg, const PlanOptions& opt, bool json);
int run_generate(const std::string& ckpt, const std::string& prompt, const SampleConfig& sc,
                 comm::Group world, int tp);
// Under mpirun the processes of `world` share the batches (see evaluate()).
int run_eval(const std::string& ckpt, const std::string& data, int64_t max_batches,
             comm::Group world, int tp);

}  // namespace parallama
