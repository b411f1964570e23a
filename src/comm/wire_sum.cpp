// Group::iall_reduce_wire and ireduce_scatter_wire: fp32 sums with bf16 or blockwise int8/int4 on
// the wire, as two phases of point-to-point messages (see group.h). One operation in flight is a
// WireSum; its test() makes progress: when phase 1's messages are in, it sums (and, for the
// all-reduce, starts phase 2); when phase 2's are in, it stores the decoded sums.
#include <algorithm>
#include <cmath>
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

// How a chunk of n floats travels. BF16: n values rounded to nearest even. I8 and I4: blockwise
// (IntCodec below). A chunk is encoded on its own, so a rank's chunk starts a block.

struct Bf16Codec {
  static int64_t bytes(int64_t n) { return 2 * n; }
  static void encode(uint8_t* dst, const float* src, int64_t n) {
    kernels::to_lowp(DType::BF16, reinterpret_cast<uint16_t*>(dst), src, n);
  }
  // Value j of an encoded chunk of n values.
  static float at(const uint8_t* c, int64_t, int64_t j) {
    return bf16_to_float(reinterpret_cast<const uint16_t*>(c)[j]);
  }
};

// Blockwise integers: the chunk's block scales (fp32, max |x| / kMax of each block of kBlock
// values), then its values round(x / scale) in [-kMax, kMax]: int8 one to a byte, int4 two to a
// byte (value + 8, the even index in the low nibble), padded to 4 bytes.
template <int kBits, int64_t kBlock>
struct IntCodec {
  static constexpr float kMax = kBits == 8 ? 127.0f : 7.0f;
  static int64_t blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }
  static int64_t value_bytes(int64_t n) { return kBits == 8 ? n : (n + 1) / 2; }
  static int64_t bytes(int64_t n) { return 4 * blocks(n) + (value_bytes(n) + 3) / 4 * 4; }
  static void encode(uint8_t* dst, const float* src, int64_t n) {
    const int64_t nb = blocks(n);
    float* scale = reinterpret_cast<float*>(dst);
    uint8_t* q = dst + 4 * nb;
    if (kBits == 4) std::fill(q, q + value_bytes(n), uint8_t{0});
#pragma omp parallel for schedule(static) if (n > (int64_t{1} << 16))
    for (int64_t b = 0; b < nb; ++b) {  // a block's int4 values fill whole bytes (kBlock even)
      const int64_t j0 = b * kBlock, j1 = std::min(n, j0 + kBlock);
      float mx = 0.0f;
      for (int64_t j = j0; j < j1; ++j) mx = std::max(mx, std::fabs(src[j]));
      const float sc = mx / kMax, inv = mx > 0.0f ? kMax / mx : 0.0f;
      scale[b] = sc;
      for (int64_t j = j0; j < j1; ++j) {
        const int v = static_cast<int>(std::clamp(std::nearbyint(src[j] * inv), -kMax, kMax));
        if (kBits == 8)
          q[j] = static_cast<uint8_t>(static_cast<int8_t>(v));
        else
          q[j / 2] |= static_cast<uint8_t>((v + 8) << (4 * (j % 2)));
      }
    }
  }
  static float at(const uint8_t* c, int64_t n, int64_t j) {
    const float* scale = reinterpret_cast<const float*>(c);
    const uint8_t* q = c + 4 * blocks(n);
    const int v = kBits == 8 ? static_cast<int8_t>(q[j]) : ((q[j / 2] >> (4 * (j % 2))) & 15) - 8;
    return static_cast<float>(v) * scale[j / kBlock];
  }
};
using Int8Codec = IntCodec<8, kWireInt8Block>;
using Int4Codec = IntCodec<4, kWireInt4Block>;
static_assert(kWireInt4Block % 2 == 0, "an int4 block fills whole bytes");

// f(codec) with the codec of wire type t (BF16, I8 or I4).
template <class F>
decltype(auto) with_codec(DType t, F&& f) {
  if (t == DType::I8) return f(Int8Codec{});
  if (t == DType::I4) return f(Int4Codec{});
  return f(Bf16Codec{});
}

int64_t encoded_bytes(DType wire, int64_t n) {
  return with_codec(wire, [n](auto c) { return decltype(c)::bytes(n); });
}

class WireSum : public PendingOp {
 public:
  // gather: all-reduce (in == data, out unused); otherwise reduce-scatter of in into out.
  // dropped (n floats, or null): what the encoding dropped of this rank's values (see group.h).
  WireSum(std::shared_ptr<Backend> be, std::shared_ptr<WireScratch> scratch, DType wire,
          const float* in, float* out, float* data, float* dropped, std::vector<int64_t> counts,
          uint64_t seq)
      : be_(std::move(be)),
        scratch_(std::move(scratch)),
        wire_type_(wire),
        in_(in),
        out_(out),
        data_(data),
        dropped_(dropped),
        counts_(std::move(counts)),
        seq_(seq) {
    const int D = be_->size(), me = be_->rank();
    offsets_.assign(D, 0), at_.assign(D + 1, 0);
    for (int r = 1; r < D; ++r) offsets_[r] = offsets_[r - 1] + counts_[r - 1];
    for (int r = 0; r < D; ++r) at_[r + 1] = at_[r] + encoded_bytes(wire, counts_[r]);
    n_ = offsets_[D - 1] + counts_[D - 1];
    const int64_t mine = counts_[me], mine_bytes = at_[me + 1] - at_[me];
    // Buffers of earlier wire sums: every byte is written before it is read.
    wire_buf_ = scratch_->take(static_cast<size_t>(at_[D]));
    inbox_buf_ = scratch_->take(static_cast<size_t>(std::max<int64_t>(D * mine_bytes, 1)));
    wire_ = wire_buf_.data(), inbox_ = inbox_buf_.data();
    // This rank's own chunk is summed in fp32: only the others' chunks are encoded now.
    for (int r = 0; r < D; ++r)
      if (r != me) encode(r, in_ + offsets_[r]);
    for (int k = 1; k < D; ++k) {  // peers in a rotated order: not everyone at rank 0 first
      const int to = (me + k) % D, from = (me - k + D) % D;
      if (mine > 0) recv(inbox_ + from * mine_bytes, mine_bytes, from, 0);
      if (counts_[to] > 0) send(wire_ + at_[to], at_[to + 1] - at_[to], to, 0);
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
  void send(const uint8_t* p, int64_t bytes, int to, int phase) {
    reqs_.push_back(be_->send(p, bytes, to, wire_tag(seq_, phase)));
  }
  void recv(uint8_t* p, int64_t bytes, int from, int phase) {
    reqs_.push_back(be_->recv(p, bytes, from, wire_tag(seq_, phase)));
  }
  bool all_done() {
    bool all = true;
    for (auto& r : reqs_) all = (!r || r->test()) && all;  // test each: each call progresses
    if (all) reqs_.clear();
    return all;
  }
  // Chunk r of the wire buffer from src (counts_[r] values); with dropped_, what it lost.
  void encode(int r, const float* src) {
    const int64_t n = counts_[r];
    uint8_t* c = wire_ + at_[r];
    float* d = dropped_ ? dropped_ + offsets_[r] : nullptr;
    with_codec(wire_type_, [&](auto codec) {
      using Codec = decltype(codec);
      Codec::encode(c, src, n);
      if (!d) return;
#pragma omp parallel for simd schedule(static) if (n > (int64_t{1} << 16))
      for (int64_t j = 0; j < n; ++j) d[j] = src[j] - Codec::at(c, n, j);
    });
  }
  // s = Σ_r v_r in rank order (this rank's own fp32 value, the others' decoded) into dst.
  template <class Codec>
  void sum(float* dst) const {
    const int D = be_->size(), me = be_->rank();
    const int64_t mine = counts_[me], mine_bytes = at_[me + 1] - at_[me];
    const float* own = in_ + offsets_[me];
    const uint8_t* in = inbox_;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < mine; ++j) {
      float s = 0.0f;
      for (int r = 0; r < D; ++r) s += r == me ? own[j] : Codec::at(in + r * mine_bytes, mine, j);
      dst[j] = s;
    }
  }
  // Phase 1 done: this rank's sums; for the all-reduce, encoded and sent to every rank.
  void sum_and_gather() {
    const int D = be_->size(), me = be_->rank();
    const int64_t mine = counts_[me];
    const bool gather = data_ != nullptr;
    // The all-reduce sums into its own chunk of data: in_ (== data_) is read only there, at the
    // same index, and the others' chunks are already encoded.
    float* dst = gather ? data_ + offsets_[me] : out_;
    with_codec(wire_type_, [&](auto codec) { sum<decltype(codec)>(dst); });
    if (!gather) {
      if (dropped_) std::fill(dropped_ + offsets_[me], dropped_ + offsets_[me] + mine, 0.0f);
      phase_ = 3;
      return;
    }
    encode(me, dst);  // rounded once: every rank, this one included, stores the same values
    // Phase 2: this rank's encoded sum to every rank, theirs into the rest of the wire buffer
    // (phase 1's sends from it are complete).
    for (int k = 1; k < D; ++k) {
      const int to = (me + k) % D, from = (me - k + D) % D;
      if (counts_[from] > 0) recv(wire_ + at_[from], at_[from + 1] - at_[from], from, 1);
      if (mine > 0) send(wire_ + at_[me], at_[me + 1] - at_[me], to, 1);
    }
    phase_ = 2;
  }
  template <class Codec>
  void decode_all() {
    const int D = be_->size();
    for (int r = 0; r < D; ++r) {
      const uint8_t* c = wire_ + at_[r];
      float* d = data_ + offsets_[r];
      const int64_t n = counts_[r];
#pragma omp parallel for simd schedule(static)
      for (int64_t j = 0; j < n; ++j) d[j] = Codec::at(c, n, j);
    }
  }
  // Phase 2 done: the whole buffer, this rank's chunk included, decoded.
  void unpack() {
    with_codec(wire_type_, [&](auto codec) { decode_all<decltype(codec)>(); });
    phase_ = 3;
  }

  std::shared_ptr<Backend> be_;
  std::shared_ptr<WireScratch> scratch_;
  DType wire_type_;
  const float* in_;
  float *out_, *data_, *dropped_;
  std::vector<int64_t> counts_, offsets_, at_;  // values per chunk, their offsets, byte offsets
  uint64_t seq_;
  int64_t n_ = 0;
  int phase_ = 1;
  std::vector<uint8_t> wire_buf_, inbox_buf_;
  uint8_t *wire_ = nullptr, *inbox_ = nullptr;
  std::vector<std::unique_ptr<PendingOp>> reqs_;
};

void check_wire(DType wire, const char* what) {
  if (wire != DType::BF16 && wire != DType::I8 && wire != DType::I4)
    throw Error(std::string(what) + ": the wire type is " + dtype_name(wire) +
                "; BF16, I8 and I4 are implemented (F32 is the exact operation)");
}

// Bytes this rank sends and receives in the two phases (phase 2 only for the all-reduce).
Traffic wire_bytes(DType wire, const std::vector<int64_t>& counts, int me, bool gather) {
  double all = 0;
  for (int64_t c : counts) all += static_cast<double>(encoded_bytes(wire, c));
  const double mine = static_cast<double>(encoded_bytes(wire, counts[me]));
  const double others = static_cast<double>(counts.size() - 1);
  Traffic t;
  t.sent = all - mine;
  t.received = others * mine;
  if (gather) {
    t.sent += others * mine;
    t.received += all - mine;
  }
  return t;
}

}  // namespace

Request Group::iall_reduce_wire(float* data, int64_t count, DType wire, float* dropped) {
  check_wire(wire, "all_reduce");
  if (size() == 1) {
    if (dropped) std::fill(dropped, dropped + count, 0.0f);
    return iall_reduce(data, count);
  }
  const std::vector<int64_t> counts = even_counts(count, size());
  const uint64_t s = stamp(Op::AllReduce, count);
  const Traffic t = wire_bytes(wire, counts, rank(), true);
  this->count(t.sent, t.received);
  return Request(
      std::make_unique<WireSum>(be_, wire_scratch(), wire, data, nullptr, data, dropped, counts, s),
      st_, Op::AllReduce, s);
}

Request Group::ireduce_scatter_wire(const float* in, float* out, const std::vector<int64_t>& counts,
                                    DType wire, float* dropped) {
  check_wire(wire, "reduce_scatter");
  if (size() == 1) {
    if (dropped) std::fill(dropped, dropped + counts.at(0), 0.0f);
    return ireduce_scatter(in, out, counts);
  }
  if (static_cast<int>(counts.size()) != size())
    throw Error("reduce_scatter: one count per rank needed");
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  const uint64_t s = stamp(Op::ReduceScatter, total);
  const Traffic t = wire_bytes(wire, counts, rank(), false);
  this->count(t.sent, t.received);
  return Request(
      std::make_unique<WireSum>(be_, wire_scratch(), wire, in, out, nullptr, dropped, counts, s),
      st_, Op::ReduceScatter, s);
}

}  // namespace parallama::comm
