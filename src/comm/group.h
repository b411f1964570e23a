#pragma once
// comm::Group: a small value type (rank, size, split) whose collectives take the group
// explicitly; there is no global communicator. Backends live in their own folders: self/ (size
// 1, every collective a no-op) and mpi/. Every operation has a non-blocking form returning a
// Request; the blocking form is the non-blocking one waited on.
//
// Checking: with check_collectives on, every collective first exchanges a stamp (sequence
// number, operation, element count) with every other rank and throws an Error naming the first
// mismatch by rank and operation. Every wait has a deadline (timeout_s): instead of hanging, it
// throws an Error naming the operation (and, when checking, the ranks that never arrived).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/error.h"

namespace parallama::comm {

// The most values of one int8 block on the wire (iall_reduce_wire with DType::I8), and of one
// int4 block (DType::I4).
constexpr int64_t kWireInt8Block = 256;
constexpr int64_t kWireInt4Block = 64;

enum class ReduceOp { Sum, Max, BitOr };  // BitOr: integer types
enum class Op { AllReduce, ReduceScatter, AllGather, Broadcast, Send, Recv, Barrier };
const char* op_name(Op op);

// A non-blocking operation in flight, from a backend.
class PendingOp {
 public:
  virtual ~PendingOp() = default;
  virtual bool test() = 0;  // true once complete
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::shared_ptr<Backend> split(int color, int key) = 0;
  // Reduces in place (sum or maximum).
  virtual std::unique_ptr<PendingOp> all_reduce(void* data, int64_t count, DType t,
                                                ReduceOp op) = 0;
  // in: sum of counts; out: counts[rank]. Sum.
  virtual std::unique_ptr<PendingOp> reduce_scatter(const void* in, void* out,
                                                    const std::vector<int64_t>& counts,
                                                    DType t) = 0;
  // in: counts[rank]; out: sum of counts, rank after rank.
  virtual std::unique_ptr<PendingOp> all_gather(const void* in, void* out,
                                                const std::vector<int64_t>& counts, DType t) = 0;
  virtual std::unique_ptr<PendingOp> broadcast(void* data, int64_t count, DType t, int root) = 0;
  virtual std::unique_ptr<PendingOp> send(const void* data, int64_t bytes, int peer, int tag) = 0;
  virtual std::unique_ptr<PendingOp> recv(void* data, int64_t bytes, int peer, int tag) = 0;
  virtual std::unique_ptr<PendingOp> barrier() = 0;
  virtual std::string name() const = 0;
  // Group rank r for messages: "rank W" in the world, with its host where known ("rank 3 (host
  // n2)").
  virtual std::string where(int r) const { return "rank " + std::to_string(r); }
  // The host group rank r runs on; "" where unknown (a group of one).
  virtual std::string host(int /*r*/) const { return ""; }
  // The group ranks (this one excluded) that do not answer a ping within wait_s: dead, stopped,
  // or behind a cut link. Empty when all answered or when the backend cannot tell. `busy` (when
  // given) gets those that answered while not waiting for communication: alive, but they did
  // not arrive at the operation (computing, or stuck outside communication).
  virtual std::vector<int> unanswered(double /*wait_s*/, std::vector<int>* /*busy*/ = nullptr) {
    return {};
  }
};

// A timeout in which some peers did not answer a ping: the job cannot go on, and waiting for
// the other processes to report the same (they may be the ones cut off) would only delay it.
class PeerLost : public Error {
 public:
  using Error::Error;
};

struct GroupState;  // sequence numbers and settings shared by copies of one Group
class WireScratch;  // buffers of the wire sums (wire_scratch.h)

// Bytes sent and received (fractional: a ring all-reduce moves 2(n-1)/n of its buffer).
struct Traffic {
  double sent = 0, received = 0;
};

class Request {
 public:
  Request() = default;
  Request(std::unique_ptr<PendingOp> op, std::shared_ptr<GroupState> st, Op kind, uint64_t seq);
  Request(Request&&) noexcept;
  Request& operator=(Request&&) noexcept;
  ~Request();
  void wait();  // throws Error at the group's deadline (see Options::wait_for_busy)
  bool test();
  bool done() const { return !op_; }
  // Waits for all of them, testing each in turn, so that none waits for another to complete
  // before it makes progress (a two-phase operation starts its second phase as soon as its first
  // is done). Timed as wait() is; past the first one's timeout, waits for each as wait() does.
  static void wait_all(const std::vector<Request*>& reqs);

 private:
  void check_peers() const;
  std::unique_ptr<PendingOp> op_;
  std::shared_ptr<GroupState> st_;
  Op kind_ = Op::Barrier;
  uint64_t seq_ = 0;
};

struct Options {
  bool check_collectives = false;
  double timeout_s = 300.0;
  // At the timeout, keep waiting (another timeout_s, and so on) while the ranks that did not
  // arrive answer pings as busy: for a collective after work of uneven length (data-parallel
  // generation), where slow is not stuck. A rank that does not answer still ends the wait.
  bool wait_for_busy = false;
};

class Group {
 public:
  Group();  // the size-1 group
  explicit Group(std::shared_ptr<Backend> backend, Options opt = {});
  int rank() const;
  int size() const;
  std::string backend_name() const;
  Group split(int color, int key) const;
  void set_options(const Options& o);
  // Names the group in error messages ("tensor-parallel all_reduce #12 did not complete ...").
  void set_name(const std::string& name);
  // Group rank r in messages, with its world rank and host where the backend knows them.
  std::string where(int r) const;
  std::string host(int r) const;
  const Options& options() const;
  uint64_t collectives_issued() const;
  // Bytes this process sent and received through this group and every group split from it or
  // from the same parent. Collectives count what a ring algorithm moves per rank: all-reduce
  // 2(n-1)/n of the buffer each way, reduce-scatter and all-gather (n-1)/n of the whole;
  // broadcast the buffer (sent by the root, received by the others); send/recv exactly.
  int64_t bytes_sent() const;
  int64_t bytes_received() const;
  // The same, counted the same way, through this group alone: shared by copies of this Group,
  // not by groups split from it or from its parent. A mesh reads one axis's traffic here.
  Traffic traffic() const;

  Request iall_reduce(void* data, int64_t count, DType t = DType::F32, ReduceOp op = ReduceOp::Sum);
  Request ireduce_scatter(const void* in, void* out, const std::vector<int64_t>& counts,
                          DType t = DType::F32);
  Request iall_gather(const void* in, void* out, const std::vector<int64_t>& counts,
                      DType t = DType::F32);
  // fp32 sums with `wire` on the network: BF16 (half the bytes of fp32, rounded to nearest even)
  // or I8 (blockwise: int8 values with an fp32 scale, max |x| / 127, per block of at most
  // kWireInt8Block values; a quarter of the bytes and a little more) or I4 (the same with values
  // in [-7, 7], two to a byte, per block of at most kWireInt4Block; 0.5625 bytes a value). The
  // buffer is divided into
  // one chunk per rank (counts; even_counts for the all-reduce); rank d receives the others'
  // chunk d encoded and sums it in fp32, in rank order 0..D-1, with its own values unencoded in
  // their place. reduce_scatter: that sum into out (counts[rank] values; out may be in's own
  // chunk). all_reduce: rank d encodes its sum once and sends it to every rank; every rank, d
  // included, stores the decoded sums, so the replicas stay bitwise equal. dropped (count
  // values, or null): what the encoding dropped of this rank's part, value minus decoded value
  // (the others' chunks of its input; for the all-reduce, its own chunk of the sum; 0 where
  // nothing was encoded), so that Σ over ranks of dropped plus the result is the exact sum (error
  // feedback). Two phases of point-to-point messages (each phase moves the bytes of a ring's
  // half); stamped as one collective, counted as the bytes it sends and receives, timed by its
  // Request. A group of one runs the exact operation.
  Request iall_reduce_wire(float* data, int64_t count, DType wire, float* dropped = nullptr);
  Request ireduce_scatter_wire(const float* in, float* out, const std::vector<int64_t>& counts,
                               DType wire, float* dropped = nullptr);
  Request ibroadcast(void* data, int64_t count, int root, DType t = DType::F32);
  Request isend(const void* data, int64_t bytes, int peer, int tag = 0);
  Request irecv(void* data, int64_t bytes, int peer, int tag = 0);
  Request ibarrier();

  void all_reduce(void* data, int64_t count, DType t = DType::F32, ReduceOp op = ReduceOp::Sum) {
    iall_reduce(data, count, t, op).wait();
  }
  void reduce_scatter(const void* in, void* out, const std::vector<int64_t>& counts,
                      DType t = DType::F32) {
    ireduce_scatter(in, out, counts, t).wait();
  }
  void all_gather(const void* in, void* out, const std::vector<int64_t>& counts,
                  DType t = DType::F32) {
    iall_gather(in, out, counts, t).wait();
  }
  void broadcast(void* data, int64_t count, int root, DType t = DType::F32) {
    ibroadcast(data, count, root, t).wait();
  }
  void send(const void* data, int64_t bytes, int peer, int tag = 0) {
    isend(data, bytes, peer, tag).wait();
  }
  void recv(void* data, int64_t bytes, int peer, int tag = 0) {
    irecv(data, bytes, peer, tag).wait();
  }
  void barrier() { ibarrier().wait(); }

  // Convenience: sum of one value over the group.
  double sum(double v);
  int64_t sum(int64_t v);

 private:
  uint64_t stamp(Op op, int64_t count);  // sequence number; checks agreement when enabled
  std::shared_ptr<class WireScratch> wire_scratch() const;
  void count(double sent, double received);
  // reduce_scatter / all_gather: checks the counts, stamps, counts the traffic.
  uint64_t begin_sharded(Op op, const std::vector<int64_t>& counts, DType t);
  std::shared_ptr<Backend> be_;
  std::shared_ptr<GroupState> st_;
};

// Seconds this process has spent blocked in Request::wait, in every group, since it started:
// the time it waited for communication and for slower peers (a step's share: the difference).
double wait_seconds();
// Whether this process is waiting for a communication operation now (any thread; read by the
// MPI backend's progress thread to answer pings).
bool waiting_now();

// Even split of n elements over `parts` (the first n % parts get one more).
std::vector<int64_t> even_counts(int64_t n, int parts);

}  // namespace parallama::comm
