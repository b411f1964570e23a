#pragma once
// Dynamic load balancing of data parallelism: each global batch of R·K micro-batches (R ranks,
// K each when shares are equal) is shared in proportion to the ranks' measured speed. The set
// of samples in a step, the global batch and the token-weighted mean are those of equal shares
// (every rank scales its gradient by the global count of targets), so the trajectory is the
// same up to the order of floating-point sums; only who computes which micro-batch changes.
// Rank r takes the micro-batches [first(r), first(r) + share(r)) of the global batch.
#include <cstdint>
#include <vector>

#include "comm/group.h"

namespace parallama {

// Shares of `total` micro-batches in proportion to `rates`, each at least 1 and at most `cap`
// (needs ranks ≤ total ≤ ranks · cap); the same on every rank for the same input (largest
// remainders first, ties to the lower rank).
std::vector<int> shares_by_rate(const std::vector<double>& rates, int total, int cap);

class Balancer {
 public:
  // ranks · per_rank micro-batches per step; re-planned every `every` steps; a share is at most
  // cap_factor · per_rank micro-batches (rounded down, at least per_rank).
  Balancer(int ranks, int per_rank, int every, double cap_factor);
  int share(int rank) const { return shares_[rank]; }
  int first(int rank) const;
  int cap() const { return cap_; }
  const std::vector<int>& shares() const { return shares_; }
  // After each step: this rank's compute seconds for its share. Every `every` steps the ranks
  // of dp exchange their speeds (micro-batches per compute second over those steps; a
  // collective) and take new shares. Returns true when the shares changed.
  bool observe(comm::Group& dp, double compute_s);

 private:
  int ranks_, per_rank_, every_, cap_;
  std::vector<int> shares_;
  int steps_ = 0;
  double micro_ = 0, seconds_ = 0;  // this rank's, since the last plan
};

}  // namespace parallama
