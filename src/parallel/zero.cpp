#include "parallel/zero.h"

#include <algorithm>

#include "comm/group.h"

namespace parallama {

std::vector<GradBucket> grad_buckets(const ParamLayout& layout, int64_t limit, int64_t alone) {
  limit = std::max<int64_t>(1, limit);
  const auto& specs = layout.specs();
  std::vector<GradBucket> out;
  int64_t end = layout.total();
  for (size_t i = specs.size(); i-- > 0;) {
    const int64_t begin = specs[i].offset;
    const bool before_alone = i > 0 && specs[i - 1].offset == alone;
    // Close at a tensor boundary once large enough, at the buffer's start, and around `alone`.
    if (end - begin >= limit || i == 0 || begin == alone || before_alone) {
      out.push_back({begin, end});
      end = begin;
    }
  }
  return out;
}

ZeroPlan make_zero_plan(const ParamLayout& layout, int dp_size, int dp_rank, int64_t limit,
                        int64_t alone) {
  ZeroPlan z;
  z.buckets = grad_buckets(layout, limit, alone);
  const size_t n = z.buckets.size();
  z.counts.resize(n), z.piece_begin.resize(n), z.piece_at.resize(n);
  for (size_t i = 0; i < n; ++i) {
    z.counts[i] = comm::even_counts(z.buckets[i].end - z.buckets[i].begin, dp_size);
    int64_t lo = z.buckets[i].begin;
    for (int d = 0; d < dp_rank; ++d) lo += z.counts[i][d];
    z.piece_begin[i] = lo;
  }
  for (size_t i = n; i-- > 0;) {  // the shard in flat order: buckets were made from the end
    z.piece_at[i] = z.owned;
    const int64_t len = z.counts[i][dp_rank];
    if (len > 0) z.runs.push_back({z.piece_begin[i], z.piece_begin[i] + len, z.owned});
    z.owned += len;
  }
  return z;
}

double owned_sq_sum(const ParamLayout& layout, const std::vector<OwnedRun>& runs,
                    const std::vector<const float*>& run_grads, bool replicated) {
  const auto& specs = layout.specs();
  double sum = 0.0;
  for (size_t k = 0; k < runs.size(); ++k)
    for (const ParamSpec& s : specs) {
      const OwnedRun& r = runs[k];
      const int64_t a = std::max(r.begin, s.offset), b = std::min(r.end, s.offset + s.numel);
      if (a >= b || s.tied_copy || (s.split_axis < 0 && !replicated)) continue;
      const float* p = run_grads[k] + (a - r.begin);
      double part = 0.0;
#pragma omp parallel for simd reduction(+ : part) schedule(static)
      for (int64_t i = 0; i < b - a; ++i) part += static_cast<double>(p[i]) * p[i];
      sum += part;
    }
  return sum;
}

}  // namespace parallama
