#pragma once
// Gradient buckets, and ZeRO's division of them over the data-parallel group.
//
// A bucket is a range of the flat gradient buffer closed at tensor boundaries; buckets are made
// from the end of the buffer, the order in which backward finishes gradients. Under ZeRO each
// bucket is split evenly over the D data-parallel ranks, rank after rank (Megatron-LM's
// distributed optimizer does the same): a bucket's reduce-scatter leaves rank d the summed
// gradients of its piece, rank d updates that piece (it alone holds its optimizer state), and
// the bucket's all-gather brings every rank the updated parameters. Each tensor lies in one
// bucket, so a tensor's pieces are contiguous and in rank order: a checkpoint gathers a tensor's
// state with one all-gather.
#include <cstdint>
#include <vector>

#include "model/params.h"
#include "optim/optimizer.h"

namespace parallama {

struct GradBucket {
  int64_t begin = 0, end = 0;
};

// Buckets from the end of the layout to its start, each closed at the first tensor boundary
// where it holds at least limit floats. A tensor at flat offset `alone` (≥ 0) gets a bucket of
// its own: the tied embedding, whose two pipeline copies must be divided alike.
std::vector<GradBucket> grad_buckets(const ParamLayout& layout, int64_t limit, int64_t alone = -1);

struct ZeroPlan {
  std::vector<GradBucket> buckets;           // as grad_buckets makes them
  std::vector<std::vector<int64_t>> counts;  // per bucket: the elements of each data-parallel rank
  std::vector<int64_t> piece_begin;          // per bucket: this rank's first flat offset
  std::vector<int64_t> piece_at;             // per bucket: that piece's offset in the shard
  std::vector<OwnedRun> runs;                // this rank's pieces in flat order (the optimizer's)
  int64_t owned = 0;                         // floats this rank owns
};

ZeroPlan make_zero_plan(const ParamLayout& layout, int dp_size, int dp_rank, int64_t limit,
                        int64_t alone = -1);

// Σ g² over the owned pieces of the gradients, run r's at run_grads[r] (see grad_sq_sum: split
// tensors always, replicated ones when `replicated`, tied copies never).
double owned_sq_sum(const ParamLayout& layout, const std::vector<OwnedRun>& runs,
                    const std::vector<const float*>& run_grads, bool replicated);

}  // namespace parallama
