#include "parallel/balance.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tensor/error.h"

namespace parallama {

std::vector<int> shares_by_rate(const std::vector<double>& rates, int total, int cap) {
  const int n = static_cast<int>(rates.size());
  if (n == 0 || total < n || static_cast<int64_t>(total) > static_cast<int64_t>(n) * cap)
    throw Error("internal: cannot share " + std::to_string(total) + " micro-batches among " +
                std::to_string(n) + " ranks of at most " + std::to_string(cap));
  std::vector<double> r(rates);
  for (double& x : r) x = std::isfinite(x) && x > 0 ? x : 0.0;
  double sum = std::accumulate(r.begin(), r.end(), 0.0);
  if (!(sum > 0)) r.assign(n, 1.0), sum = n;  // nothing measured: equal shares
  // The whole parts of each rank's ideal share, within [1, cap]; then one at a time to the
  // rank furthest below its ideal (or from the one furthest above it), ties to the lower rank.
  std::vector<double> ideal(n);
  std::vector<int> s(n);
  int left = total;
  for (int i = 0; i < n; ++i) {
    ideal[i] = total * r[i] / sum;
    s[i] = std::clamp(static_cast<int>(std::floor(ideal[i])), 1, cap);
    left -= s[i];
  }
  while (left != 0) {
    int pick = -1;
    for (int i = 0; i < n; ++i) {
      if (left > 0 ? s[i] >= cap : s[i] <= 1) continue;
      const double gap = ideal[i] - s[i];
      if (pick < 0 || (left > 0 ? gap > ideal[pick] - s[pick] : gap < ideal[pick] - s[pick]))
        pick = i;
    }
    s[pick] += left > 0 ? 1 : -1;
    left += left > 0 ? -1 : 1;
  }
  return s;
}

Balancer::Balancer(int ranks, int per_rank, int every, double cap_factor)
    : ranks_(ranks),
      per_rank_(per_rank),
      every_(every),
      cap_(std::max(per_rank, static_cast<int>(std::floor(cap_factor * per_rank)))),
      shares_(ranks, per_rank) {}

int Balancer::first(int rank) const {
  return std::accumulate(shares_.begin(), shares_.begin() + rank, 0);
}

bool Balancer::observe(comm::Group& dp, double compute_s) {
  micro_ += shares_[dp.rank()];
  seconds_ += compute_s;
  if (++steps_ % every_ != 0) return false;
  double mine = seconds_ > 0 ? micro_ / seconds_ : 0.0;
  std::vector<double> rates(ranks_);
  dp.all_gather(&mine, rates.data(), std::vector<int64_t>(ranks_, 1), DType::F64);
  micro_ = seconds_ = 0;
  const std::vector<int> next = shares_by_rate(rates, ranks_ * per_rank_, cap_);
  if (next == shares_) return false;
  shares_ = next;
  return true;
}

}  // namespace parallama
