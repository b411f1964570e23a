#include "train/link_watch.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace parallama {

namespace {

constexpr int kProbeTag = 29001;
constexpr int kRounds = 3;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

double median_rate(const std::vector<LinkRate>& links) {
  std::vector<double> r;
  for (const LinkRate& l : links) r.push_back(l.mb_per_s);
  std::sort(r.begin(), r.end());
  const size_t n = r.size();
  return n == 0 ? 0.0 : n % 2 ? r[n / 2] : 0.5 * (r[n / 2 - 1] + r[n / 2]);
}

std::vector<size_t> slow_links(const std::vector<LinkRate>& links, double fraction) {
  // Two links: the median is their mean, so the slower is named when under 2·fraction/(1 +
  // fraction) of the faster one.
  std::vector<size_t> out;
  if (links.size() < 2) return out;
  const double median = median_rate(links);
  for (size_t i = 0; i < links.size(); ++i)
    if (links[i].mb_per_s < fraction * median) out.push_back(i);
  return out;
}

std::vector<size_t> confirmed_slow_links(const std::vector<LinkRate>& links,
                                         std::set<int>& slow_before) {
  std::vector<size_t> out;
  std::set<int> now;
  for (size_t i : slow_links(links)) {
    now.insert(links[i].from);
    if (slow_before.count(links[i].from)) out.push_back(i);
  }
  slow_before = std::move(now);
  return out;
}

LinkWatch::LinkWatch(comm::Group world, int every, int64_t first_step, bool enabled, int64_t bytes)
    : world_(std::move(world)), every_(every), first_(first_step), bytes_(bytes) {
  // The first rank of each host sends to the first rank of the next host (in rank order).
  const int n = world_.size();
  std::vector<int> firsts;
  for (int r = 0; r < n; ++r) {
    bool first = true;
    for (int q = 0; q < r && first; ++q) first = world_.host(q) != world_.host(r);
    if (first) firsts.push_back(r);
  }
  to_.assign(n, -1);
  if (firsts.size() > 1)
    for (size_t i = 0; i < firsts.size(); ++i) to_[firsts[i]] = firsts[(i + 1) % firsts.size()];
  enabled_ = enabled && every_ > 0 && firsts.size() > 1;
}

bool LinkWatch::due(int64_t step) const {
  if (!enabled_) return false;
  const int64_t k = step - (first_ + 2);
  return k == 0 || (k > 0 && (step % every_ == 0 || !slow_before_.empty()));
}

// One link at a time: a host that sends while it receives would delay the acknowledgements of
// what it receives behind its own queue, and its incoming link would look slow too.
std::vector<std::string> LinkWatch::probe(int64_t step) {
  const int n = world_.size(), me = world_.rank();
  std::vector<char> buf(static_cast<size_t>(bytes_), 1);
  std::vector<double> rate(n, 0.0);
  for (int from = 0; from < n; ++from) {
    if (to_[from] < 0) continue;
    for (int round = 0; round < kRounds; ++round) {  // the best of a few: scheduling noise
      // The clock starts when a one-byte message arrives, not at the barrier: ranks leave a
      // barrier at different moments, which would show as a slow link between fast hosts.
      world_.barrier();
      char start = 0;
      if (me == from) {
        world_.send(&start, 1, to_[from], kProbeTag);
        world_.send(buf.data(), bytes_, to_[from], kProbeTag);
      }
      if (me != to_[from]) continue;
      world_.recv(&start, 1, from, kProbeTag);
      const double t0 = now();
      world_.recv(buf.data(), bytes_, from, kProbeTag);
      rate[from] =
          std::max(rate[from], static_cast<double>(bytes_) / 1e6 / std::max(now() - t0, 1e-6));
    }
  }
  world_.all_reduce(rate.data(), n, DType::F64);  // each link measured by one rank
  last_.clear();
  for (int r = 0; r < n; ++r)
    if (to_[r] >= 0) last_.push_back({r, to_[r], rate[r]});
  // Every rank holds the same rates, so every rank agrees on the next probe (see due()).
  std::vector<size_t> confirmed = confirmed_slow_links(last_, slow_before_);
  std::vector<std::string> lines;
  const double median = median_rate(last_);
  for (size_t i : confirmed) {
    const LinkRate& l = last_[i];
    const std::string host = world_.host(l.from), to = world_.host(l.to);
    if (!hosts_named_.insert(host).second) continue;
    char line[320];
    std::snprintf(
        line, sizeof line,
        "warning: host %s is a network straggler: at step %lld its link to %s (rank %d "
        "to rank %d) carried %.2f MB/s, under a quarter of the median of the %zu links (%.2f "
        "MB/s); every collective it joins runs at that pace",
        host.c_str(), static_cast<long long>(step), to.c_str(), l.from, l.to, l.mb_per_s,
        last_.size(), median);
    if (me == 0) lines.push_back(line);
    named_.push_back({{"host", host},
                      {"rank", l.from},
                      {"to_host", to},
                      {"to_rank", l.to},
                      {"mb_per_s", l.mb_per_s},
                      {"median_mb_per_s", median},
                      {"named_at_step", step}});
  }
  // A host named already needs no second look.
  std::erase_if(slow_before_, [&](int r) { return hosts_named_.count(world_.host(r)) > 0; });
  return lines;
}

}  // namespace parallama
