#include "comm/group.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "comm/self/self_backend.h"
#include "comm/wire_scratch.h"
#include "tensor/error.h"
#include "tensor/profile.h"

namespace parallama::comm {

namespace {

constexpr int kStampTag = 32001;  // reserved for collective checks

using Clock = std::chrono::steady_clock;

struct Stamp {
  uint64_t seq;
  int64_t op;
  int64_t count;
};

// Polls until done or the deadline; returns false at the deadline. Spins (yielding) for the
// first 2 ms, where collectives of tensor and pipeline parallelism finish, then backs off to a
// test every 100 us: a rank that waits long for a peer does not hold a core.
std::atomic<int> waiters{0};
// While one lives, this process waits for communication (see waiting_now()).
struct Waiting {
  Waiting() { waiters.fetch_add(1, std::memory_order_relaxed); }
  ~Waiting() { waiters.fetch_sub(1, std::memory_order_relaxed); }
};

bool poll(PendingOp& op, Clock::time_point deadline) {
  const Waiting waiting;
  const auto spin_until = Clock::now() + std::chrono::milliseconds(2);
  for (int spins = 0;; ++spins) {
    if (op.test()) return true;
    if ((spins & 63) == 63) {
      const auto t = Clock::now();
      if (t > deadline) return false;
      if (t < spin_until)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
}

}  // namespace

struct GroupState {
  std::shared_ptr<Backend> be;  // for names and pings in timeout messages
  Options opt;
  std::string name;  // e.g. "tensor-parallel ", prefixed to operation names in errors
  uint64_t seq = 0;
  int rank = 0;
  std::shared_ptr<Traffic> traffic = std::make_shared<Traffic>();       // shared with split groups
  Traffic own;                                                          // this group's alone
  std::shared_ptr<WireScratch> wire = std::make_shared<WireScratch>();  // wire sums' buffers
};

const char* op_name(Op op) {
  switch (op) {
    case Op::AllReduce:
      return "all_reduce";
    case Op::ReduceScatter:
      return "reduce_scatter";
    case Op::AllGather:
      return "all_gather";
    case Op::Broadcast:
      return "broadcast";
    case Op::Send:
      return "send";
    case Op::Recv:
      return "recv";
    case Op::Barrier:
      return "barrier";
  }
  return "?";
}

std::vector<int64_t> even_counts(int64_t n, int parts) {
  std::vector<int64_t> c(parts, n / parts);
  for (int i = 0; i < n % parts; ++i) ++c[i];
  return c;
}

Request::Request(std::unique_ptr<PendingOp> op, std::shared_ptr<GroupState> st, Op kind,
                 uint64_t seq)
    : op_(std::move(op)), st_(std::move(st)), kind_(kind), seq_(seq) {}
Request::Request(Request&&) noexcept = default;
Request& Request::operator=(Request&&) noexcept = default;
Request::~Request() = default;

bool Request::test() {
  if (op_ && op_->test()) op_.reset();
  return !op_;
}

namespace {
std::atomic<int64_t> waited_ns{0};  // see wait_seconds()
}  // namespace

bool waiting_now() {
  return waiters.load(std::memory_order_relaxed) > 0;
}

double wait_seconds() {
  return static_cast<double>(waited_ns.load(std::memory_order_relaxed)) * 1e-9;
}

// At a timeout: throws, naming the ranks that do not answer, or those that answer but did not
// arrive; returns (to wait on) when those are busy and the group waits for busy ranks.
void Request::check_peers() const {
  const std::string what = st_->be->where(st_->rank) + ": " + st_->name + op_name(kind_) + " #" +
                           std::to_string(seq_) + " did not complete within " +
                           std::to_string(static_cast<int>(st_->opt.timeout_s)) + " s";
  // Which peers answer? A live one answers at once, even while it waits itself.
  std::vector<int> busy;
  const std::vector<int> silent = st_->be->unanswered(3.0, &busy);
  auto names = [&](const std::vector<int>& ranks) {
    std::string who;
    for (int r : ranks) who += (who.empty() ? "" : ", ") + st_->be->where(r);
    return who;
  };
  if (!silent.empty())
    throw PeerLost(what + ": no answer from " + names(silent) +
                   " (the process died or is stopped, or the network to its host is cut)");
  if (!busy.empty() && st_->opt.wait_for_busy) return;
  if (!busy.empty())
    throw PeerLost(what + ": " + names(busy) +
                   " did not arrive: it answers but waits for no communication (it computes "
                   "slowly, or is stuck outside communication)");
  throw Error(what + ": another rank died, hangs, or called a different collective " +
              "(set parallel.check_collectives = true to find which)");
}

std::shared_ptr<WireScratch> Group::wire_scratch() const {
  return st_->wire;
}

void Request::wait_all(const std::vector<Request*>& reqs) {
  std::vector<Request*> left;
  for (Request* r : reqs)
    if (r->op_) left.push_back(r);
  if (left.empty()) return;
  {
    prof::KindScope scope(prof::Kind::comm);
    const Waiting waiting;
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(left[0]->st_->opt.timeout_s));
    const auto spin_until = start + std::chrono::milliseconds(2);
    for (int spins = 0; !left.empty(); ++spins) {
      std::erase_if(left, [](Request* r) { return r->test(); });
      if (left.empty() || (spins & 63) != 63) continue;
      const auto t = Clock::now();
      if (t > deadline) break;
      if (t < spin_until)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    waited_ns.fetch_add(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count(),
        std::memory_order_relaxed);
  }
  for (Request* r : left) r->wait();  // past the deadline: named, pinged, or waited for longer
}

void Request::wait() {
  if (!op_) return;
  prof::KindScope scope(prof::Kind::comm);
  const Waiting waiting;  // also while it pings the others at a timeout: it still waits
  const auto start = Clock::now();
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(st_->opt.timeout_s));
  for (bool completed = false; !completed;) {
    completed = poll(*op_, deadline);
    if (!completed) {
      check_peers();
      deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(st_->opt.timeout_s));
    }
  }
  waited_ns.fetch_add(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count(),
      std::memory_order_relaxed);
  op_.reset();
}

Group::Group() : Group(std::make_shared<SelfBackend>()) {}

Group::Group(std::shared_ptr<Backend> backend, Options opt)
    : be_(std::move(backend)), st_(std::make_shared<GroupState>()) {
  st_->opt = opt;
  st_->rank = be_->rank();
  st_->be = be_;
}

std::string Group::where(int r) const {
  return be_->where(r);
}
std::string Group::host(int r) const {
  return be_->host(r);
}

int Group::rank() const {
  return be_->rank();
}
int Group::size() const {
  return be_->size();
}
std::string Group::backend_name() const {
  return be_->name();
}
Group Group::split(int color, int key) const {
  Group g(be_->split(color, key), st_->opt);
  g.st_->traffic = st_->traffic;
  return g;
}
int64_t Group::bytes_sent() const {
  return static_cast<int64_t>(st_->traffic->sent);
}
int64_t Group::bytes_received() const {
  return static_cast<int64_t>(st_->traffic->received);
}
Traffic Group::traffic() const {
  return st_->own;
}
void Group::count(double sent, double received) {
  st_->traffic->sent += sent;
  st_->traffic->received += received;
  st_->own.sent += sent;
  st_->own.received += received;
}
void Group::set_options(const Options& o) {
  st_->opt = o;
}
void Group::set_name(const std::string& name) {
  st_->name = name.empty() ? name : name + " ";
}
const Options& Group::options() const {
  return st_->opt;
}
uint64_t Group::collectives_issued() const {
  return st_->seq;
}

uint64_t Group::stamp(Op op, int64_t count) {
  const uint64_t seq = st_->seq++;
  if (!st_->opt.check_collectives || size() == 1) return seq;
  const Stamp mine{seq, static_cast<int64_t>(op), count};
  const int n = size(), me = rank();
  std::vector<Stamp> theirs(n);
  std::vector<std::unique_ptr<PendingOp>> sends, recvs(n);
  for (int r = 0; r < n; ++r) {
    if (r == me) continue;
    sends.push_back(be_->send(&mine, sizeof mine, r, kStampTag));
    recvs[r] = be_->recv(&theirs[r], sizeof(Stamp), r, kStampTag);
  }
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(st_->opt.timeout_s));
  std::string missing;
  for (int r = 0; r < n; ++r)
    if (recvs[r] && !poll(*recvs[r], deadline))
      missing += (missing.empty() ? "" : ", ") + std::to_string(r);
  if (!missing.empty())
    throw Error(be_->where(me) + ": " + st_->name + op_name(op) + " #" + std::to_string(seq) +
                ": ranks " + missing + " never arrived within " +
                std::to_string(static_cast<int>(st_->opt.timeout_s)) +
                " s (dead or stuck elsewhere)");
  for (auto& s : sends) poll(*s, deadline);
  for (int r = 0; r < n; ++r) {
    if (r == me) continue;
    const Stamp& t = theirs[r];
    if (t.seq != seq || t.op != mine.op || t.count != count) {
      const int lo = std::min(me, r), hi = std::max(me, r);
      const Stamp& a = lo == me ? mine : t;
      const Stamp& b = lo == me ? t : mine;
      auto desc = [](const Stamp& s) {
        return std::string(op_name(static_cast<Op>(s.op))) + " #" + std::to_string(s.seq) + " (" +
               std::to_string(s.count) + " elements)";
      };
      throw Error("collective mismatch: rank " + std::to_string(lo) + " called " + desc(a) +
                  " but rank " + std::to_string(hi) + " called " + desc(b));
    }
  }
  return seq;
}

Request Group::iall_reduce(void* data, int64_t count, DType t, ReduceOp op) {
  if (t == DType::BF16 || t == DType::F16)
    throw Error("all_reduce cannot sum 16-bit floats: sum F32 with iall_reduce_wire");
  const uint64_t s = stamp(Op::AllReduce, count);
  const double n = size(), b = static_cast<double>(count * dtype_size(t));
  this->count(2 * (n - 1) / n * b, 2 * (n - 1) / n * b);
  return Request(be_->all_reduce(data, count, t, op), st_, Op::AllReduce, s);
}
uint64_t Group::begin_sharded(Op op, const std::vector<int64_t>& counts, DType t) {
  if (static_cast<int>(counts.size()) != size())
    throw Error(std::string(op_name(op)) + ": one count per rank needed");
  int64_t total = 0;
  for (auto c : counts) total += c;
  const uint64_t s = stamp(op, total);
  const double n = size(), b = static_cast<double>(total * dtype_size(t));
  count((n - 1) / n * b, (n - 1) / n * b);
  return s;
}

Request Group::ireduce_scatter(const void* in, void* out, const std::vector<int64_t>& counts,
                               DType t) {
  if (t == DType::BF16 || t == DType::F16)
    throw Error("reduce_scatter cannot sum 16-bit floats: sum F32 with ireduce_scatter_wire");
  const uint64_t s = begin_sharded(Op::ReduceScatter, counts, t);
  return Request(be_->reduce_scatter(in, out, counts, t), st_, Op::ReduceScatter, s);
}
Request Group::iall_gather(const void* in, void* out, const std::vector<int64_t>& counts, DType t) {
  const uint64_t s = begin_sharded(Op::AllGather, counts, t);
  return Request(be_->all_gather(in, out, counts, t), st_, Op::AllGather, s);
}
Request Group::ibroadcast(void* data, int64_t count, int root, DType t) {
  const uint64_t s = stamp(Op::Broadcast, count);
  const double b = size() > 1 ? static_cast<double>(count * dtype_size(t)) : 0.0;
  if (rank() == root)
    this->count(b, 0);
  else
    this->count(0, b);
  return Request(be_->broadcast(data, count, t, root), st_, Op::Broadcast, s);
}
Request Group::isend(const void* data, int64_t bytes, int peer, int tag) {
  count(static_cast<double>(bytes), 0);
  return Request(be_->send(data, bytes, peer, tag), st_, Op::Send, 0);
}
Request Group::irecv(void* data, int64_t bytes, int peer, int tag) {
  count(0, static_cast<double>(bytes));
  return Request(be_->recv(data, bytes, peer, tag), st_, Op::Recv, 0);
}
Request Group::ibarrier() {
  const uint64_t s = stamp(Op::Barrier, 0);
  return Request(be_->barrier(), st_, Op::Barrier, s);
}

double Group::sum(double v) {
  all_reduce(&v, 1, DType::F64);
  return v;
}
int64_t Group::sum(int64_t v) {
  all_reduce(&v, 1, DType::I64);
  return v;
}

}  // namespace parallama::comm
