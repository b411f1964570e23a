#pragma once
// `parallama bench`: training steps on random tokens, timed (see bench.cpp).
#include <optional>

#include "comm/group.h"
#include "plan/plan.h"
#include "train/run_config.h"

namespace parallama {

// Prints the step time, throughput, MFU, memory per rank, bytes per mesh axis and, by layout,
// data-parallel scaling, tensor-parallel overlap and the pipeline's bubble; json: also one JSON
// object on the last line; profile: where a step's time goes.
int run_bench(const RunConfig& cfg, bool json, comm::Group world, bool profile = false,
              const std::optional<Device>& device = std::nullopt);

}  // namespace parallama
