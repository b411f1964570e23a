#include "train/straggler.h"

#include <algorithm>
#include <cstdio>

namespace parallama {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

std::vector<std::string> StragglerWatch::observe(int64_t step,
                                                 const std::vector<WorkerTime>& workers) {
  constexpr double kWeight = 0.25;  // of the newest step in the moving average
  if (warmup_ > 0) {
    --warmup_;
    return {};
  }
  std::map<int, std::vector<double>> by_stage;
  for (const WorkerTime& w : workers) {
    Track& t = tracks_[w.rank];
    if (t.stage != w.stage) t.average = -1;  // other work now
    t.stage = w.stage;
    t.average = t.average < 0 ? w.compute_s : (1 - kWeight) * t.average + kWeight * w.compute_s;
    by_stage[w.stage].push_back(t.average);
  }
  std::vector<std::string> lines;
  for (const WorkerTime& w : workers) {
    const std::vector<double>& peers = by_stage[w.stage];
    Track& t = tracks_[w.rank];
    const double mid = median(peers);
    if (peers.size() < 2 || !(mid > 0) || t.average <= (1 + threshold_) * mid) {
      t.run = 0;
      continue;
    }
    ++t.run, ++t.slow_steps;
    t.ratio_sum += t.average / mid;
    if (t.run < steps_ || t.named_at >= 0) continue;
    t.named_at = step;
    char line[256];
    std::snprintf(line, sizeof line,
                  "warning: rank %d is a straggler: %d steps in a row (to step %lld) its compute "
                  "took more than %.0f%% over the median of the %zu workers of its stage "
                  "(averages %.4f s against %.4f s); the others wait for it",
                  w.rank, steps_, static_cast<long long>(step), 100 * threshold_, peers.size(),
                  t.average, mid);
    lines.push_back(line);
  }
  return lines;
}

nlohmann::json StragglerWatch::report() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [rank, t] : tracks_)
    if (t.named_at >= 0)
      out.push_back({{"rank", rank},
                     {"stage", t.stage},
                     {"named_at_step", t.named_at},
                     {"slow_steps", t.slow_steps},
                     {"compute_ratio", t.ratio_sum / static_cast<double>(t.slow_steps)}});
  return out;
}

std::vector<WorkerTime> worker_times(const nlohmann::json& j) {
  std::vector<WorkerTime> out;
  if (!j.contains("bytes_per_rank")) return out;
  for (const auto& r : j["bytes_per_rank"])
    if (r.value("role", "") == "worker" && r.contains("compute_s"))
      out.push_back({r["rank"].get<int>(), r.value("stage", 0), r["compute_s"].get<double>()});
  return out;
}

}  // namespace parallama
