#pragma once
// `parallama calibrate`: the machines of the job measured for the planner (plan/profile.h).
#include <optional>
#include <string>

#include "comm/group.h"
#include "model/config.h"
#include "plan/profile.h"

namespace parallama {

// Collective over world (every rank measures at once, as training runs them): GEMM rates in fp32
// and bf16 at the shapes of `model`'s projections (squares without one), streaming bandwidth,
// and latency and bandwidth between ranks within a host and between hosts. Every rank returns
// the same profile (rates averaged over the ranks). `only`: a quick one (a few seconds) of that
// precision's GEMMs alone, at fewer shapes, timed more briefly.
Profile calibrate(comm::Group& world, const LlamaConfig* model = nullptr,
                  std::optional<Precision> only = std::nullopt);

// calibrate(), then rank 0 writes the profile to `out` (refused, before measuring, when out
// exists and not force) and prints what it measured.
int run_calibrate(comm::Group& world, const std::string& out, bool force, const LlamaConfig* model);

}  // namespace parallama
