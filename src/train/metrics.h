#pragma once
// What a person follows during training: a live status line on a terminal, plain log lines
// otherwise, and metrics.jsonl in the run directory (one JSON object per step).
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <string>

#include "io/line_file.h"

namespace parallama {

class Progress {
 public:
  // Appends to run_dir/metrics.jsonl, first dropping lines of steps after `resume_step` (a run
  // resumed from a checkpoint rewrites its later history).
  Progress(const std::string& run_dir, int64_t total_steps, int64_t resume_step, int log_every);
  ~Progress();
  // Writes one metrics line (j must hold "step") and shows progress. A line that cannot be written
  // (a full disk) throws Error: a run does not go on without its record. The file keeps only
  // whole lines: what of a failed line reached it is cut off again (io/line_file.h).
  void step(nlohmann::json j, int64_t tokens_this_step);
  void message(const std::string& line);  // a line of its own, above the live status
  double elapsed() const;

 private:
  [[noreturn]] void fail(int err) const;
  io::LineFile out_;
  std::string path_;
  int64_t total_, first_step_;
  int log_every_;
  bool tty_;
  bool live_shown_ = false;
  std::chrono::steady_clock::time_point start_;
  int64_t tokens_ = 0;
};

std::string format_duration(double seconds);

}  // namespace parallama
