// Group::iall_reduce_wire and ireduce_scatter_wire: fp32 sums with bf16 on the wire, as two
// phases of point-to-point messages (see group.h). One operation in flight is a WireSum; its
// test() makes progress: when phase 1's messages are in, it sums (and, for the all-reduce, starts
// phase 2); when phase 2's are in, it stores the rounded sums.
#include <algorithm>
#include <memory>
#include <vector>

#include "comm/group.h"
#include "comm/wire_scratch.h"
#include "kernels/matmul.h"
#include "tensor/bf16.h"

namespace parallama::comm {

namespace {

// Two tags per operation (its phases), below the collective check's tag. A tag is reused only
// 1000 wire operations later, and every rank starts them in the same order, so messages of one
// tag match in order anyway.
constexpr int kWireTagBase = 30000;
int wire_tag(uint64_t seq, int phase) {
  return kWireTagBase + 2 * static_cast<int>(seq % 1000) + phase;
}

class WireSum : public PendingOp {
 public:
  // gather: all-reduce (in == data, out unused); otherwise reduce-scatter of in into out.
  WireSum(std::shared_ptr<Backend> be, std::shared_ptr<WireScratch> scratch, const float* in,
          float* out, float* data, std::vector<int64_t> counts, uint64_t seq)
      : be_(std::move(be)),
        scratch_(std::move(scratch)),
        in_(in),
        out_(out),
        data_(data),
        counts_(std::move(counts)),
        seq_(seq) {
    const int D = be_->size(), me = be_->rank();
    offsets_.assign(D, 0);
    for (int r = 1; r < D; ++r) offsets_[r] = offsets_[r - 1] + counts_[r - 1];
    n_ = offsets_[D - 1] + counts_[D - 1];
    const int64_t mine = counts_[me], off = offsets_[me];
    // Buffers of earlier wire sums: every element is written before it is read.
    wire_buf_ = scratch_->take(static_cast<size_t>(n_));
    inbox_buf_ = scratch_->take(static_cast<size_t>(std::max<int64_t>(D * mine, 1)));
    wire_ = wire_buf_.data(), inbox_ = inbox_buf_.data();
    // This rank's own chunk is summed in fp32: only the others' chunks are rounded now.
    kernels::to_lowp(DType::BF16, wire_, in_, off);
    kernels::to_lowp(DType::BF16, wire_ + off + mine, in_ + off + mine, n_ - off - mine);
    for (int k = 1; k < D; ++k) {  // peers in a rotated order: not everyone at rank 0 first
      const int to = (me + k) % D, from = (me - k + D) % D;
      if (mine > 0) recv(inbox_ + from * mine, mine, from, 0);
      if (counts_[to] > 0) send(wire_ + offsets_[to], counts_[to], to, 0);
    }
  }

  ~WireSum() override {
    if (!reqs_.empty()) return;  // messages still in flight (an error): the buffers stay theirs
    scratch_->give_back(std::move(wire_buf_));
    scratch_->give_back(std::move(inbox_buf_));
  }
  WireSum(const WireSum&) = delete;
  WireSum& operator=(const WireSum&) = delete;

  bool test() override {
    if (phase_ == 1 && all_done()) sum_and_gather();
    if (phase_ == 2 && all_done()) unpack();
    return phase_ == 3;
  }

 private:
  void send(const uint16_t* p, int64_t n, int to, int phase) {
    reqs_.push_back(be_->send(p, 2 * n, to, wire_tag(seq_, phase)));
  }
  void recv(uint16_t* p, int64_t n, int from, int phase) {
    reqs_.push_back(be_->recv(p, 2 * n, from, wire_tag(seq_, phase)));
  }
  bool all_done() {
    bool all = true;
    for (auto& r : reqs_) all = (!r || r->test()) && all;  // test each: each call progresses
    if (all) reqs_.clear();
    return all;
  }
  // Phase 1 done: s = Σ_r v_r in rank order (this rank's own fp32 value, the others' bf16).
  void sum_and_gather() {
    const int D = be_->size(), me = be_->rank();
    const int64_t mine = counts_[me], off = offsets_[me];
    const float* own = in_ + off;
    const uint16_t* in = inbox_;
    float* out = out_;
    uint16_t* wire = wire_ + off;
    const bool gather = data_ != nullptr;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < mine; ++j) {
      float s = 0.0f;
      for (int r = 0; r < D; ++r) s += r == me ? own[j] : bf16_to_float(in[r * mine + j]);
      if (gather)
        wire[j] = float_to_bf16(s);
      else
        out[j] = s;
    }
    if (!gather) {
      phase_ = 3;
      return;
    }
    // Phase 2: this rank's rounded sum to every rank, theirs into the rest of the wire buffer
    // (phase 1's sends from it are complete).
    for (int k = 1; k < D; ++k) {
      const int to = (me + k) % D, from = (me - k + D) % D;
      if (counts_[from] > 0) recv(wire_ + offsets_[from], counts_[from], from, 1);
      if (mine > 0) send(wire, mine, to, 1);
    }
    phase_ = 2;
  }
  // Phase 2 done: the whole buffer, this rank's chunk included, from bf16.
  void unpack() {
    float* d = data_;
    const uint16_t* w = wire_;
#pragma omp parallel for simd schedule(static)
    for (int64_t j = 0; j < n_; ++j) d[j] = bf16_to_float(w[j]);
    phase_ = 3;
  }

  std::shared_ptr<Backend> be_;
  std::shared_ptr<WireScratch> scratch_;
  const float* in_;
  float* out_;
  float* data_;
  std::vector<int64_t> counts_, offsets_;
  uint64_t seq_;
  int64_t n_ = 0;
  int phase_ = 1;
  std::vector<uint16_t> wire_buf_, inbox_buf_;
  uint16_t *wire_ = nullptr, *inbox_ = nullptr;
  std::vector<std::unique_ptr<PendingOp>> reqs_;
};

void check_wire(DType wire, const char* what) {
  if (wire != DType::BF16)
    throw Error(std::string(what) + ": the wire type is " + dtype_name(wire) +
                "; only BF16 is implemented (F32 is the exact operation)");
}

// Bytes this rank sends and receives in the two phases (phase 2 only for the all-reduce).
Traffic wire_bytes(const std::vector<int64_t>& counts, int me, bool gather) {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  const int64_t mine = counts[me], D = static_cast<int64_t>(counts.size());
  Traffic t;
  t.sent = 2.0 * static_cast<double>(n - mine);
  t.received = 2.0 * static_cast<double>((D - 1) * mine);
  if (gather) {
    t.sent += 2.0 * static_cast<double>((D - 1) * mine);
    t.received += 2.0 * static_cast<double>(n - mine);
  }
  return t;
}

}  // namespace

Request Group::iall_reduce_wire(float* data, int64_t count, DType wire) {
  check_wire(wire, "all_reduce");
  if (size() == 1) return iall_reduce(data, count);
  const std::vector<int64_t> counts = even_counts(count, size());
  const uint64_t s = stamp(Op::AllReduce, count);
  const Traffic t = wire_bytes(counts, rank(), true);
  this->count(t.sent, t.received);
  return Request(std::make_unique<WireSum>(be_, wire_scratch(), data, nullptr, data, counts, s),
                 st_, Op::AllReduce, s);
}

Request Group::ireduce_scatter_wire(const float* in, float* out, const std::vector<int64_t>& counts,
                                    DType wire) {
  check_wire(wire, "reduce_scatter");
  if (size() == 1) return ireduce_scatter(in, out, counts);
  if (static_cast<int>(counts.size()) != size())
    throw Error("reduce_scatter: one count per rank needed");
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  const uint64_t s = stamp(Op::ReduceScatter, total);
  const Traffic t = wire_bytes(counts, rank(), false);
  this->count(t.sent, t.received);
  return Request(std::make_unique<WireSum>(be_, wire_scratch(), in, out, nullptr, counts, s), st_,
                 Op::ReduceScatter, s);
}

}  // namespace parallama::comm
