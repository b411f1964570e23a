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
  for (const GradBucket& b :
       grad_buckets(grads.layout(), bucket_bytes / static_cast<int64_t>(sizeof(float))))
    buckets_.push_back({b.begin, b.end, {}});
}

GradReducer::GradReducer(comm::Group group, ParamBuffer& grads, const ZeroPlan& plan,
                         const std::vector<float*>& out)
    : group_(std::move(group)), grads_(grads), scatter_(true) {
  for (size_t i = 0; i < plan.buckets.size(); ++i)
    buckets_.push_back(
        {plan.buckets[i].begin, plan.buckets[i].end, {}, false, false, out[i], &plan.counts[i]});
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
  if (group_.size() == 1 && !scatter_) return;
  while (next_ < buckets_.size() && buckets_[next_].begin >= offset) {
    Bucket& b = buckets_[next_++];
    if (t_first_ == 0) t_first_ = now();
    b.req = scatter_ ? group_.ireduce_scatter(grads_.data() + b.begin, b.out, *b.counts)
                     : group_.iall_reduce(grads_.data() + b.begin, b.end - b.begin);
    b.launched = true;
  }
  poll();  // MPI makes progress on non-blocking collectives when called
}

ReduceStats GradReducer::finish() {
  ReduceStats s;
  if (group_.size() == 1 && !scatter_) return s;
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
