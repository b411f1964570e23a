#pragma once
// Traffic per mesh axis: the bytes this rank sent plus received through the groups of each axis,
// as comm::Group counts them (a ring all-reduce 2(n-1)/n of its buffer each way, send and recv
// exactly). The axes and what travels on them:
//   dp     the data-parallel group: the gradient all-reduce (with ZeRO its reduce-scatter and
//          all-gather), the global sums of targets and loss; with a parameter server, the
//          workers' pushes and pulls (and all of a server's traffic)
//   tp     the tensor-parallel group: the model's all-reduces (row-parallel outputs, input
//          gradients of column-parallel layers, the vocabulary-parallel embedding and loss)
//   pp     the pipeline group (activations forward, their gradients backward, the loss sum over
//          stages) and the tied-embedding group (the first and last stage summing the gradient
//          of a tied embedding: it crosses stages)
//   other  the replica group (tp × pp): the one-number sums of the gradient norm over the shards
// A step's numbers cover its forward, backward, synchronization and update; validation,
// checkpoints and the exchange of metrics fall outside them.
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>

#include "comm/group.h"
#include "parallel/mesh.h"
#include "parallel/sync.h"

namespace parallama {

inline constexpr const char* kAxes[] = {"dp", "tp", "pp", "other"};

struct AxisBytes {
  double dp = 0, tp = 0, pp = 0, other = 0;
  std::array<double, 4> values() const { return {dp, tp, pp, other}; }  // in kAxes order
  AxisBytes operator-(const AxisBytes& o) const;
  AxisBytes& operator+=(const AxisBytes& o);
  AxisBytes operator/(double d) const;
};

// This rank's bytes per axis so far. `servers`: the group on which a parameter-server worker
// pushes and pulls (counted as dp), or null.
AxisBytes axis_bytes(const Mesh& mesh, const comm::Group* servers = nullptr);

// "dp 1.234 MB, tp 0.000 MB, pp 0.567 MB, other 0.000 MB"
std::string describe_axes(const AxisBytes& b);

// Where a step's wall time went on this rank: waiting, blocked in communication (for the data
// and for slower peers: comm::wait_seconds()), and computing, the rest.
struct StepTimes {
  double compute_s = 0, wait_s = 0;
  int stage = 0;  // this rank's pipeline stage: only ranks of one stage do the same work
};

// Fills a metrics line with this step's traffic and times: this rank's bytes_sent,
// bytes_received, bytes_dp, bytes_tp, bytes_pp, bytes_other, compute_s and wait_s; with more
// than one process (`many`) also bytes_per_rank, every worker's {rank, role, sent, received, dp,
// tp, pp, other, compute_s, wait_s, stage} (gathered over all_workers, collective; with `own_only`,
// this rank's alone), then the servers' bytes from j["server_bytes"], which it removes.
void add_step_traffic(nlohmann::json& j, comm::Group& all_workers, bool own_only, bool many,
                      const comm::Traffic& step, const AxisBytes& axes, const StepTimes& times);

// Every rank's traffic per step over a run, gathered over `world` (collective): for each rank
// {rank, role, params (of its shard, or a server's slice), bytes_sent_per_step,
// bytes_received_per_step, bytes_dp_per_step, bytes_tp_per_step, bytes_pp_per_step,
// bytes_other_per_step}. Sent and received are the world totals (everything); `axes` the sum of
// the steps' axis bytes (a server counts its whole traffic as dp).
nlohmann::json traffic_summary(comm::Group& world, const Roles& roles, int64_t steps,
                               const AxisBytes& axes, int64_t params);

// How the run compresses its data-parallel traffic, for summary.json and bench --json:
// {"method": parallel.compress, "after": compress_after, "powersgd_rank" (powersgd),
// "diloco": diloco.compress (--sync diloco)}.
nlohmann::json compression_summary(const ParallelConfig& p);

// One rank's entry of traffic_summary as a log line.
std::string describe_rank_traffic(const nlohmann::json& r);

}  // namespace parallama
