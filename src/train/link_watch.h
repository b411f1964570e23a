#pragma once
// Network stragglers named by host. A slow link slows every rank of a collective alike (a ring
// all-reduce runs at its slowest link), so the step times of the straggler watch cannot tell
// which host it is. A probe can: on a probe step, the first rank of each host sends `bytes` to
// the first rank of the next host (by rank order, wrapping), one link at a time after a barrier,
// and the receiver times the arrival from a one-byte message sent just before (the best of 3
// tries). Every rank learns the rate of every host-to-host link; one under a quarter of the
// median of all of them is slow. A slow link is probed again at the next step, and its sending
// host is named (once a run) only when it was slow both times: timing noise on a busy machine
// stays within a factor of 2 or 3 and rarely hits one link twice, a shaped link always does.
// The run's summary records each host named.
//
// Probes run at the third step of a run and every `every` steps after; a job on one host, or
// with parameter servers (whose ranks do not step together), probes nothing.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "comm/group.h"

namespace parallama {

struct LinkRate {
  int from = 0, to = 0;  // world ranks
  double mb_per_s = 0;
};

double median_rate(const std::vector<LinkRate>& links);
// Which links are slow: those under `fraction` of the median rate of all of them.
std::vector<size_t> slow_links(const std::vector<LinkRate>& links, double fraction = 0.25);
// The slow links of this probe whose sending rank was also slow in the previous one (whose
// sending ranks are `slow_before`); `slow_before` becomes this probe's.
std::vector<size_t> confirmed_slow_links(const std::vector<LinkRate>& links,
                                         std::set<int>& slow_before);

class LinkWatch {
 public:
  LinkWatch(comm::Group world, int every, int64_t first_step, bool enabled,
            int64_t bytes = 256 << 10);
  bool due(int64_t step) const;
  // Every rank of the world calls this on a due step; rank 0 gets the warning lines of hosts
  // named for the first time (the others an empty list).
  std::vector<std::string> probe(int64_t step);
  // [{host, rank, to_host, to_rank, mb_per_s, median_mb_per_s, named_at_step}]
  nlohmann::json report() const { return named_; }
  // The rates measured by the last probe (rank 0), for metrics.jsonl.
  const std::vector<LinkRate>& last() const { return last_; }

 private:
  comm::Group world_;
  int every_;
  int64_t first_;
  bool enabled_;
  int64_t bytes_;
  std::vector<int> to_;  // world rank -> the rank it sends to (-1: none)
  std::vector<LinkRate> last_;
  std::set<int> slow_before_;  // sending ranks slow in the last probe, not yet confirmed
  std::set<std::string> hosts_named_;
  nlohmann::json named_ = nlohmann::json::array();
};

}  // namespace parallama
