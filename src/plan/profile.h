#pragma once
// A machine profile: what `parallama calibrate` measured of the machines a job runs on, for the
// planner's time model (plan/plan.h) in place of its assumed device.
//
// The file (JSON; docs/planning.md):
//   {"format": "parallama-profile", "version": 1,
//    "hosts": ["a", "b"], "ranks": 4, "ranks_per_host": 2, "threads_per_rank": 1,
//    "memory_gb_per_rank": 11.9,
//    "gemm": {"fp32": [[size, gflops], ...], "bf16": [...], "fp16": [...]},
//    "memory_gbps": 9.5,
//    "links": {"within": {"latency_us": 4.1, "gbps": 40.2},
//              "between": {"latency_us": 90.0, "gbps": 0.47}},
//    "seconds": 21.4}
// gemm: per precision, the GFLOP/s one rank sustains while every rank of its host multiplies at
// once, at increasing GEMM sizes (the cube root of M·N·K); memory_gbps likewise for streaming
// (a triad). links: per rank, all pairs exchanging at once, within a host and between hosts
// ("between" null on one host).
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/llama.h"

namespace parallama {

struct Device;

inline constexpr int kProfileVersion = 1;

struct LinkProfile {
  double latency_us = 0, gbps = 0;  // one way, per message; per rank, Gbit/s
};

struct Profile {
  std::vector<std::string> hosts;
  int ranks = 1, ranks_per_host = 1, threads_per_rank = 1;
  int cores_per_host = 0;  // 0: not recorded (no more threads than cores assumed)
  double memory_gb_per_rank = 0;
  // GEMM size -> GFLOP/s, increasing size, per precision name ("fp32", "bf16", "fp16").
  std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>> gemm;
  double memory_gbps = 0;
  double page_fault_us = 0;  // per 4 KiB page of fresh memory touched (0: not measured)
  LinkProfile within;
  std::optional<LinkProfile> between;
  double seconds = 0;  // how long measuring took

  // The device the planner assumes, from what was measured: the GEMM curve of `p` (fp16 without
  // a curve of its own: fp32's, as this program widens it), memory per rank, links (on one host,
  // "within" for every axis).
  Device device(Precision p) const;
};

nlohmann::json profile_to_json(const Profile& p);
// Reads and checks a profile file: Error with one line naming the file when it is missing,
// malformed, of another format or version, or holds a value out of range.
Profile read_profile(const std::string& path);

}  // namespace parallama
