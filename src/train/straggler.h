#pragma once
// Stragglers named: a worker whose compute time per step is more than `threshold` (20%) above
// the median of the workers of its pipeline stage (those that do the same work), for `steps`
// steps in a row, gets one warning line, and the run's summary records it. The times compared
// are moving averages (each step weighs 1/4), so that a millisecond of scheduling noise in one
// step names nobody. The workers that wait for a straggler show the time as wait_s, not
// compute_s, so the median stays the healthy pace.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace parallama {

struct WorkerTime {
  int rank = 0, stage = 0;
  double compute_s = 0;
};

class StragglerWatch {
 public:
  // The first `warmup` steps observed (first touches of memory, caches, a busy start) are not
  // judged.
  explicit StragglerWatch(double threshold = 0.2, int steps = 5, int warmup = 10)
      : threshold_(threshold), steps_(steps), warmup_(warmup) {}
  // Takes every worker's time of one step; returns the warning lines of the workers that have
  // just become stragglers (each is named once a run).
  std::vector<std::string> observe(int64_t step, const std::vector<WorkerTime>& workers);
  // The workers named: [{rank, stage, named_at_step, slow_steps, compute_ratio}], where
  // slow_steps counts every step it was over the threshold and compute_ratio is the mean of its
  // average compute time over the median's in those steps.
  nlohmann::json report() const;

 private:
  struct Track {
    int stage = 0;
    double average = -1;  // moving average of compute_s (-1: none yet)
    int run = 0;          // slow steps in a row
    int64_t slow_steps = 0, named_at = -1;
    double ratio_sum = 0;
  };
  double threshold_;
  int steps_, warmup_;
  std::map<int, Track> tracks_;  // by rank
};

// The workers' times of a metrics line's bytes_per_rank (role "worker"); empty without it.
std::vector<WorkerTime> worker_times(const nlohmann::json& metrics_line);

}  // namespace parallama
