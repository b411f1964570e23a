#include "parallel/data_parallel.h"

#include <algorithm>
#include <chrono>

namespace parallama {

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

GradReducer::GradReducer(comm::Group group, ParamBuffer& grads, int64_t bucket_bytes)
    : group_(std::move(group)), grads_(grads) {
  const int64_t limit = std::max<int64_t>(1, bucket_bytes / static_cast<int64_t>(sizeof(float)));
  const auto& specs = grads.layout().specs();
  int64_t end = grads.layout().total();
  for (size_t i = specs.size(); i-- > 0;) {
    const int64_t begin = specs[i].offset;
    // Close the bucket at a tensor boundary once it is large enough, or at the buffer's start.
    if (end - begin >= limit || i == 0) {
      buckets_.push_back({begin, end, {}, false, false});
      end = begin;
    }
  }
}

void GradReducer::begin() {
  for (auto& b : buckets_) b.launched = b.done = false;
  next_ = 0;
  t_first_ = t_last_done_ = 0;
}

void GradReducer::poll() {
  for (size_t i = 0; i < next_; ++i) {
    Bucket& b = buckets_[i];
    if (!b.done && b.req.test()) b.done = true, t_last_done_ = now();
  }
}

void GradReducer::ready_from(int64_t offset) {
  if (group_.size() == 1) return;
  while (next_ < buckets_.size() && buckets_[next_].begin >= offset) {
    Bucket& b = buckets_[next_++];
    if (t_first_ == 0) t_first_ = now();
    b.req = group_.iall_reduce(grads_.data() + b.begin, b.end - b.begin);
    b.launched = true;
  }
  poll();  // MPI makes progress on non-blocking collectives when called
}

ReduceStats GradReducer::finish() {
  ReduceStats s;
  if (group_.size() == 1) return s;
  ready_from(0);
  const double t0 = now();
  for (auto& b : buckets_)
    if (!b.done) b.req.wait(), b.done = true, t_last_done_ = now();
  s.exposed_s = now() - t0;
  s.comm_s = t_last_done_ - t_first_;
  s.buckets = static_cast<int>(buckets_.size());
  return s;
}

}  // namespace parallama
