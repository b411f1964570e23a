#include "parallel/data_parallel.h"

#include <algorithm>
#include <chrono>

#include "kernels/matmul.h"
#include "tensor/bf16.h"
#include "tensor/error.h"

namespace parallama {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// bf16 messages: two tags per bucket (its phases), below the tag of the collective check. A tag
// is reused only 1000 buckets later; both phases are started in bucket order on every rank, so
// messages of the same tag match in order anyway.
constexpr int kTagBase = 30000;
int tag(size_t bucket, int phase) {
  return kTagBase + 2 * static_cast<int>(bucket % 1000) + phase;
}

std::vector<int64_t> offsets_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> off(counts.size(), 0);
  for (size_t r = 1; r < counts.size(); ++r) off[r] = off[r - 1] + counts[r - 1];
  return off;
}

// Round to nearest even, in parallel.
void to_bf16(const float* x, uint16_t* out, int64_t n) {
  kernels::to_lowp(kernels::LowP::bf16, out, x, n);
}

}  // namespace

GradReducer::GradReducer(comm::Group group, ParamBuffer& grads, int64_t bucket_bytes,
                         ReduceDtype dtype, bool sparse_embedding)
    : group_(std::move(group)), grads_(grads) {
  bf16_ = dtype == ReduceDtype::bf16 && group_.size() > 1;
  const ParamLayout& layout = grads.layout();
  const ParamSpec* table = nullptr;
  if (sparse_embedding && !bf16_ && group_.size() > 1 && !layout.config().tie_embeddings)
    for (const ParamSpec& p : layout.specs())
      if (p.kind == ParamKind::Embedding && !p.tied_copy && p.shape.size() == 2) table = &p;
  for (const GradBucket& b :
       grad_buckets(layout, bucket_bytes / static_cast<int64_t>(sizeof(float)),
                    table ? table->offset : -1)) {
    Bucket& k = buckets_.emplace_back();
    k.begin = b.begin, k.end = b.end;
    if (table && b.begin == table->offset) k.row_width = table->shape[1];
    if (bf16_) {
      k.counts = comm::even_counts(b.end - b.begin, group_.size());
      k.offsets = offsets_of(k.counts);
    }
  }
}

GradReducer::GradReducer(comm::Group group, ParamBuffer& grads, const ZeroPlan& plan,
                         const std::vector<float*>& out, ReduceDtype dtype)
    : group_(std::move(group)), grads_(grads), scatter_(true) {
  bf16_ = dtype == ReduceDtype::bf16 && group_.size() > 1;
  for (size_t i = 0; i < plan.buckets.size(); ++i) {
    Bucket& k = buckets_.emplace_back();
    k.begin = plan.buckets[i].begin, k.end = plan.buckets[i].end;
    k.out = out[i];
    k.counts = plan.counts[i];
    k.offsets = offsets_of(k.counts);
  }
}

void GradReducer::begin() {
  for (auto& b : buckets_) {
    b.launched = b.done = false;
    b.phase = kIdle;
    b.reqs.clear();
  }
  next_ = 0;
  t_first_ = t_last_done_ = 0;
}

void GradReducer::launch(size_t i) {
  Bucket& b = buckets_[i];
  if (t_first_ == 0) t_first_ = now();
  if (bf16_)
    launch_scatter(i);
  else if (b.row_width > 0)
    launch_rows(i);
  else
    b.req = scatter_ ? group_.ireduce_scatter(grads_.data() + b.begin, b.out, b.counts)
                     : group_.iall_reduce(grads_.data() + b.begin, b.end - b.begin);
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
  group_.all_reduce(mask.data(), static_cast<int64_t>(mask.size()), comm::DataType::U64,
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

void GradReducer::complete(Bucket& b) {
  if (b.row_width > 0) unpack_rows(b);
  b.done = true;
  t_last_done_ = now();
}

// Phase 1: the bf16 copy of chunk r to rank r; the other ranks' copies of this rank's chunk in.
void GradReducer::launch_scatter(size_t i) {
  Bucket& b = buckets_[i];
  const int D = group_.size(), me = group_.rank();
  const int64_t n = b.end - b.begin, mine = b.counts[me];
  b.wire.resize(static_cast<size_t>(n));
  b.inbox.resize(static_cast<size_t>(D * mine));
  const float* g = grads_.data() + b.begin;
  // This rank's own chunk is summed in fp32: only the others' chunks are rounded now.
  to_bf16(g, b.wire.data(), b.offsets[me]);
  to_bf16(g + b.offsets[me] + mine, b.wire.data() + b.offsets[me] + mine, n - b.offsets[me] - mine);
  b.reqs.clear();
  for (int k = 1; k < D; ++k) {  // peers in a rotated order: not everyone at rank 0 first
    const int to = (me + k) % D, from = (me - k + D) % D;
    if (mine > 0)
      b.reqs.push_back(group_.irecv(b.inbox.data() + from * mine, 2 * mine, from, tag(i, 0)));
    if (b.counts[to] > 0)
      b.reqs.push_back(
          group_.isend(b.wire.data() + b.offsets[to], 2 * b.counts[to], to, tag(i, 0)));
  }
  b.phase = kScatter;
}

// Phase 1 done: s = Σ_r v_r in rank order (v = own fp32 value for this rank, the received bf16
// copy otherwise). ZeRO: s into the owned piece. Otherwise bf16(s) to every other rank.
void GradReducer::reduce_and_gather(size_t i) {
  Bucket& b = buckets_[i];
  const int D = group_.size(), me = group_.rank();
  const int64_t mine = b.counts[me], off = b.offsets[me];
  const float* own = grads_.data() + b.begin + off;
  const uint16_t* in = b.inbox.data();
  float* out = b.out;  // ZeRO: the piece's place (this rank's chunk itself, or disjoint from it)
  uint16_t* wire = b.wire.data() + off;
  const bool scatter = scatter_;
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < mine; ++j) {
    float s = 0.0f;
    for (int r = 0; r < D; ++r) s += r == me ? own[j] : bf16_to_float(in[r * mine + j]);
    if (scatter)
      out[j] = s;
    else
      wire[j] = float_to_bf16(s);
  }
  b.reqs.clear();
  if (scatter_) {
    b.phase = kDone;
    t_last_done_ = now();
    return;
  }
  // Phase 2: this rank's rounded sum to every rank, theirs into the rest of the wire buffer
  // (phase 1's sends from it are complete).
  for (int k = 1; k < D; ++k) {
    const int to = (me + k) % D, from = (me - k + D) % D;
    if (b.counts[from] > 0)
      b.reqs.push_back(
          group_.irecv(b.wire.data() + b.offsets[from], 2 * b.counts[from], from, tag(i, 1)));
    if (mine > 0) b.reqs.push_back(group_.isend(wire, 2 * mine, to, tag(i, 1)));
  }
  b.phase = kGather;
}

// Phase 2 done: the whole bucket, this rank's chunk included, from bf16 into the gradients.
void GradReducer::unpack(size_t i) {
  Bucket& b = buckets_[i];
  float* g = grads_.data() + b.begin;
  const uint16_t* w = b.wire.data();
  const int64_t n = b.end - b.begin;
#pragma omp parallel for simd schedule(static)
  for (int64_t j = 0; j < n; ++j) g[j] = bf16_to_float(w[j]);
  b.reqs.clear();
  b.phase = kDone;
  t_last_done_ = now();
}

bool GradReducer::test_all(Bucket& b) {
  bool all = true;
  for (auto& r : b.reqs) all = r.test() && all;  // test every one: each call makes progress
  return all;
}

void GradReducer::wait_all(Bucket& b) {
  for (auto& r : b.reqs) r.wait();
}

void GradReducer::poll() {
  if (!bf16_) {
    for (size_t i = 0; i < next_; ++i) {
      Bucket& b = buckets_[i];
      if (!b.done && b.req.test()) complete(b);
    }
    return;
  }
  // Phase 2 starts in bucket order: a bucket whose phase 1 is done waits for the ones before.
  bool in_order = true;
  for (size_t i = 0; i < next_; ++i) {
    Bucket& b = buckets_[i];
    if (b.phase == kScatter) {
      if (test_all(b) && in_order)
        reduce_and_gather(i);
      else
        in_order = false;
    }
    if (b.phase == kGather && test_all(b)) unpack(i);
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
  if (bf16_) {
    for (size_t i = 0; i < buckets_.size(); ++i)  // in bucket order, as poll() keeps it
      if (buckets_[i].phase == kScatter) wait_all(buckets_[i]), reduce_and_gather(i);
    for (size_t i = 0; i < buckets_.size(); ++i)
      if (buckets_[i].phase == kGather) wait_all(buckets_[i]), unpack(i);
  } else {
    for (auto& b : buckets_)
      if (!b.done) b.req.wait(), complete(b);
  }
  s.exposed_s = now() - t0;
  s.comm_s = t_last_done_ - t_first_;
  s.buckets = static_cast<int>(buckets_.size());
  return s;
}

}  // namespace parallama
