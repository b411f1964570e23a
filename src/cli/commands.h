#pragma once
// Subcommands of the parallama program.
#include "train/run_config.h"

namespace parallama {

int run_bench(const RunConfig& cfg, bool json);
int run_train(const RunConfig& cfg);
int run_info(const RunConfig& cfg);

}  // namespace parallama
