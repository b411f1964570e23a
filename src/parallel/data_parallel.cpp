#include "parallel/data_parallel.h"

#include <algorithm>
#include <chrono>

#include "tensor/error.h"

namespace parallama {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

GradReducer::GradReducer(comm::Group group, ParamBuffer& grads, int64_t bucket_bytes,
                         Compress compress, bool sparse_embedding, int64_t compress_after,
                         int powersgd_rank)
    : group_(std::move(group)), grads_(grads), compress_after_(compress_after) {
  set_compression(compress, powersgd_rank);
  const ParamLayout& layout = grads.layout();
  const ParamSpec* table = nullptr;
  if (sparse_embedding && compress == Compress::none && group_.size() > 1 &&
      !layout.config().tie_embeddings)
    for (const ParamSpec& p : layout.specs())
      if (p.kind == ParamKind::Embedding && !p.tied_copy && p.shape.size() == 2) table = &p;
  const std::vector<GradBucket> made = grad_buckets(
      layout, bucket_bytes / static_cast<int64_t>(sizeof(float)), table ? table->offset : -1);
  for (const GradBucket& b : made) {
    Bucket& k = buckets_.emplace_back();
    k.begin = b.begin, k.end = b.end;
    if (table && b.begin == table->offset) k.row_width = table->shape[1];
  }
  if (compress == Compress::powersgd && group_.size() > 1)
    lowrank_ = std::make_unique<PowerSgd>(layout, powersgd_rank, made);
}

GradReducer::GradReducer(comm::Group group, ParamBuffer& grads, const ZeroPlan& plan,
                         const std::vector<float*>& out, Compress compress, int64_t compress_after,
                         int powersgd_rank)
    : group_(std::move(group)), grads_(grads), scatter_(true), compress_after_(compress_after) {
  set_compression(compress, powersgd_rank);
  for (size_t i = 0; i < plan.buckets.size(); ++i) {
    Bucket& k = buckets_.emplace_back();
    k.begin = plan.buckets[i].begin, k.end = plan.buckets[i].end;
    k.out = out[i];
    k.counts = plan.counts[i];
  }
  if (compress == Compress::powersgd && group_.size() > 1)
    lowrank_ = std::make_unique<PowerSgd>(grads.layout(), powersgd_rank, plan.buckets);
}

void GradReducer::set_compression(Compress compress, int) {
  if (group_.size() == 1) return;  // nothing travels
  wire_ = wire_dtype(compress);
  if (error_feedback(compress)) residual_.assign(static_cast<size_t>(grads_.size()), 0.0f);
}

void GradReducer::begin(int64_t step, float unscale) {
  unscale_ = unscale;
  now_ = step > compress_after_ ? wire_ : DType::F32;
  now_lowrank_ = step > compress_after_;
  for (auto& b : buckets_) {
    b.launched = b.done = false;
    b.stage = 0;
  }
  next_ = 0;
  t_first_ = t_last_done_ = 0;
}

void GradReducer::launch(size_t i) {
  Bucket& b = buckets_[i];
  if (t_first_ == 0) t_first_ = now();
  float* g = grads_.data() + b.begin;
  const int64_t n = b.end - b.begin;
  float* dropped = nullptr;
  if (!residual_.empty() && (now_ != DType::F32 || lowrank_now())) {
    dropped = residual_.data() + b.begin;  // error feedback: last step's dropped part travels now
    const float scale = 1.0f / unscale_;   // a power of two: exact
#pragma omp parallel for simd schedule(static) if (n > (int64_t{1} << 16))
    for (int64_t j = 0; j < n; ++j) g[j] += dropped[j] * scale;
  }
  if (lowrank_now()) {
    if (i > 0 && buckets_[i - 1].stage == 1) {  // the last bucket's second sum goes first
      buckets_[i - 1].req.wait();
      advance(i - 1);
    }
    std::vector<float>& m = lowrank_->first(i, grads_.data());
    b.req = group_.iall_reduce(m.data(), static_cast<int64_t>(m.size()));
    b.stage = 1;
  } else if (now_ != DType::F32) {
    b.req = scatter_ ? group_.ireduce_scatter_wire(g, b.out, b.counts, now_, dropped)
                     : group_.iall_reduce_wire(g, n, now_, dropped);
  } else if (b.row_width > 0) {
    launch_rows(i);
  } else {
    b.req = scatter_ ? group_.ireduce_scatter(g, b.out, b.counts) : group_.iall_reduce(g, n);
  }
  b.launched = true;
}

// The embedding's non-zero rows: the union of every rank's (a mask all-reduced with OR, a few
// KB), packed in row order; their all-reduce runs like a dense bucket's.
void GradReducer::launch_rows(size_t i) {
  Bucket& b = buckets_[i];
  const int64_t C = b.row_width, R = (b.end - b.begin) / C;
  const float* g = grads_.data() + b.begin;
  std::vector<uint64_t> mask(static_cast<size_t>((R + 63) / 64), 0);
#pragma omp parallel for schedule(static)
  for (int64_t w = 0; w < static_cast<int64_t>(mask.size()); ++w)
    for (int64_t r = 64 * w; r < std::min(R, 64 * w + 64); ++r)
      for (int64_t c = 0; c < C; ++c)
        if (g[r * C + c] != 0.0f) {
          mask[w] |= uint64_t{1} << (r - 64 * w);
          break;
        }
  group_.all_reduce(mask.data(), static_cast<int64_t>(mask.size()), DType::U64,
                    comm::ReduceOp::BitOr);
  b.rows.clear();
  for (int64_t r = 0; r < R; ++r)
    if (mask[r / 64] >> (r % 64) & 1) b.rows.push_back(r);
  const int64_t U = static_cast<int64_t>(b.rows.size());
  b.packed.resize(static_cast<size_t>(U * C));
#pragma omp parallel for schedule(static)
  for (int64_t u = 0; u < U; ++u)
    std::copy(g + b.rows[u] * C, g + b.rows[u] * C + C, b.packed.data() + u * C);
  b.req = group_.iall_reduce(b.packed.data(), U * C);
}

void GradReducer::unpack_rows(Bucket& b) {
  const int64_t C = b.row_width, U = static_cast<int64_t>(b.rows.size());
  float* g = grads_.data() + b.begin;
#pragma omp parallel for schedule(static)
  for (int64_t u = 0; u < U; ++u)
    std::copy(b.packed.data() + u * C, b.packed.data() + u * C + C, g + b.rows[u] * C);
}

// PowerSGD: bucket i's first sum arrived (its second starts) or its second (the bucket is done).
void GradReducer::advance(size_t i) {
  Bucket& b = buckets_[i];
  if (b.stage == 1) {
    std::vector<float>& m = lowrank_->second(i, grads_.data(), residual_.data());
    b.req = group_.iall_reduce(m.data(), static_cast<int64_t>(m.size()));
    b.stage = 2;
    return;
  }
  lowrank_->third(i, grads_.data());
  if (scatter_) {  // this rank's piece of the rebuilt bucket
    int64_t at = b.begin;
    for (int d = 0; d < group_.rank(); ++d) at += b.counts[d];
    const float* g = grads_.data();
    std::copy(g + at, g + at + b.counts[group_.rank()], b.out);
  }
  complete(b);
}

void GradReducer::complete(Bucket& b) {
  if (b.row_width > 0) unpack_rows(b);
  if (!residual_.empty() && unscale_ != 1.0f && (now_ != DType::F32 || lowrank_now())) {
    float* r = residual_.data();  // what this step dropped, back in the true gradients' units
#pragma omp parallel for simd schedule(static) if (b.end - b.begin > (int64_t{1} << 16))
    for (int64_t j = b.begin; j < b.end; ++j) r[j] *= unscale_;
  }
  b.done = true;
  t_last_done_ = now();
}

void GradReducer::poll() {
  for (size_t i = 0; i < next_; ++i) {
    Bucket& b = buckets_[i];
    if (b.done || b.stage == 1 || !b.req.test()) continue;  // a second sum starts in order
    if (b.stage == 2)
      advance(i);
    else
      complete(b);
  }
}
void GradReducer::ready_from(int64_t offset) {
  if (group_.size() == 1 && !scatter_) return;
  while (next_ < buckets_.size() && buckets_[next_].begin >= offset) launch(next_++);
  poll();  // MPI makes progress on non-blocking operations when called
}

ReduceStats GradReducer::finish() {
  ReduceStats s;
  if (group_.size() == 1 && !scatter_) return s;
  ready_from(0);
  const double t0 = now();
  if (lowrank_now())
    for (size_t i = 0; i < buckets_.size(); ++i)
      while (!buckets_[i].done) {
        buckets_[i].req.wait();
        advance(i);
      }
  std::vector<comm::Request*> reqs;
  for (auto& b : buckets_)
    if (!b.done) reqs.push_back(&b.req);
  comm::Request::wait_all(reqs);
  for (auto& b : buckets_)
    if (!b.done) complete(b);
  s.exposed_s = now() - t0;
  s.comm_s = t_last_done_ - t_first_;
  s.buckets = static_cast<int>(buckets_.size());
  return s;
}

}  // namespace parallama
