#include "comm/mpi/mpi_backend.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <numeric>
#include <thread>

#include <unistd.h>

#include "comm/mpi/progress.h"
#include "tensor/error.h"

namespace parallama::comm {

namespace {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::F64:
      return MPI_DOUBLE;
    case DType::I64:
      return MPI_INT64_T;
    case DType::U64:
      return MPI_UINT64_T;
    case DType::U8:
      return MPI_BYTE;
    case DType::I8:
      return MPI_INT8_T;
    case DType::I4:  // a wire encoding (comm/wire_sum.cpp), not an element type MPI moves
      throw Error("MPI cannot move I4 values: they exist on the wire of iall_reduce_wire only");
    case DType::BF16:  // moved as they are (gather, broadcast); MPI cannot sum them
    case DType::F16:
      return MPI_UINT16_T;
  }
  return MPI_BYTE;
}

int to_int(int64_t n, const char* what) {
  if (n < 0 || n > INT_MAX)
    throw Error(std::string(what) + ": count " + std::to_string(n) + " exceeds the MPI limit");
  return static_cast<int>(n);
}

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw Error(std::string(what) + " failed: " + std::string(msg, len));
  }
}

// The host of every world rank (gethostname), gathered once at start.
std::vector<std::string> world_hosts;

struct MpiOp : PendingOp {
  MPI_Request req = MPI_REQUEST_NULL;
  std::vector<int> counts, displs;  // kept alive while the operation runs
  bool counted = true;              // in progress::op_started until complete
  MpiOp() { progress::op_started(); }
  ~MpiOp() override { finish(); }
  void finish() {
    if (counted) progress::op_finished(), counted = false;
  }
  bool test() override {
    int flag = 0;
    check(MPI_Test(&req, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    if (flag) finish();
    return flag != 0;
  }
};

class MpiBackend : public Backend {
 public:
  explicit MpiBackend(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    // Errors come back as codes (turned into Error), not as an abort deep inside MPI.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  std::string where(int r) const override {
    const std::string h = host(r);
    return "rank " + std::to_string(world_rank(r)) + (h.empty() ? "" : " (host " + h + ")");
  }
  std::string host(int r) const override {
    const int w = world_rank(r);
    return w >= 0 && static_cast<size_t>(w) < world_hosts.size() ? world_hosts[w] : "";
  }

  std::vector<int> unanswered(double wait_s, std::vector<int>* busy) override {
    std::vector<int> peers;
    for (int r = 0; r < size_; ++r)
      if (r != rank_) peers.push_back(world_rank(r));
    std::vector<int> silent, busy_world;
    auto to_group = [&](const std::vector<int>& world, std::vector<int>& out) {
      for (int w : world)
        for (int r = 0; r < size_; ++r)
          if (world_rank(r) == w) out.push_back(r);
    };
    to_group(progress::unanswered(peers, wait_s, &busy_world), silent);
    if (busy) to_group(busy_world, *busy);
    return silent;
  }

  std::shared_ptr<Backend> split(int color, int key) override {
    MPI_Comm sub;
    check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
    return std::make_shared<MpiBackend>(sub);
  }

  std::unique_ptr<PendingOp> all_reduce(void* data, int64_t count, DType t, ReduceOp how) override {
    auto op = std::make_unique<MpiOp>();
    check(MPI_Iallreduce(MPI_IN_PLACE, data, to_int(count, "all_reduce"), mpi_type(t),
                         how == ReduceOp::Max     ? MPI_MAX
                         : how == ReduceOp::BitOr ? MPI_BOR
                                                  : MPI_SUM,
                         comm_, &op->req),
          "MPI_Iallreduce");
    return op;
  }

  std::unique_ptr<PendingOp> reduce_scatter(const void* in, void* out,
                                            const std::vector<int64_t>& c, DType t) override {
    auto op = std::make_unique<MpiOp>();
    for (auto n : c) op->counts.push_back(to_int(n, "reduce_scatter"));
    check(MPI_Ireduce_scatter(in == out ? MPI_IN_PLACE : in, out, op->counts.data(), mpi_type(t),
                              MPI_SUM, comm_, &op->req),
          "MPI_Ireduce_scatter");
    return op;
  }

  std::unique_ptr<PendingOp> all_gather(const void* in, void* out, const std::vector<int64_t>& c,
                                        DType t) override {
    auto op = std::make_unique<MpiOp>();
    for (auto n : c) op->counts.push_back(to_int(n, "all_gather"));
    op->displs.assign(c.size(), 0);
    std::partial_sum(op->counts.begin(), op->counts.end() - 1, op->displs.begin() + 1);
    const char* mine =
        static_cast<const char*>(out) + static_cast<size_t>(op->displs[rank_]) * dtype_size(t);
    check(MPI_Iallgatherv(in == mine ? MPI_IN_PLACE : in, op->counts[rank_], mpi_type(t), out,
                          op->counts.data(), op->displs.data(), mpi_type(t), comm_, &op->req),
          "MPI_Iallgatherv");
    return op;
  }

  std::unique_ptr<PendingOp> broadcast(void* data, int64_t count, DType t, int root) override {
    auto op = std::make_unique<MpiOp>();
    check(MPI_Ibcast(data, to_int(count, "broadcast"), mpi_type(t), root, comm_, &op->req),
          "MPI_Ibcast");
    return op;
  }

  std::unique_ptr<PendingOp> send(const void* data, int64_t bytes, int peer, int tag) override {
    auto op = std::make_unique<MpiOp>();
    check(MPI_Isend(data, to_int(bytes, "send"), MPI_BYTE, peer, tag, comm_, &op->req),
          "MPI_Isend");
    return op;
  }

  std::unique_ptr<PendingOp> recv(void* data, int64_t bytes, int peer, int tag) override {
    auto op = std::make_unique<MpiOp>();
    check(MPI_Irecv(data, to_int(bytes, "recv"), MPI_BYTE, peer, tag, comm_, &op->req),
          "MPI_Irecv");
    return op;
  }

  std::unique_ptr<PendingOp> barrier() override {
    auto op = std::make_unique<MpiOp>();
    check(MPI_Ibarrier(comm_, &op->req), "MPI_Ibarrier");
    return op;
  }

 private:
  int world_rank(int r) const {
    MPI_Group mine, world;
    MPI_Comm_group(comm_, &mine);
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    int w = MPI_UNDEFINED;
    MPI_Group_translate_ranks(mine, 1, &r, world, &w);
    MPI_Group_free(&mine);
    MPI_Group_free(&world);
    return w;
  }
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

void finalize_at_exit() {
  progress::stop();
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
}

}  // namespace

namespace {
// A communicator of its own for reporting failures: no collective in flight on another one can
// match its operations.
MPI_Comm failure_comm = MPI_COMM_NULL;
void gather_hosts() {
  constexpr int kLen = 64;
  char mine[kLen] = {};
  gethostname(mine, kLen - 1);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<char> all(static_cast<size_t>(size) * kLen);
  check(MPI_Allgather(mine, kLen, MPI_CHAR, all.data(), kLen, MPI_CHAR, MPI_COMM_WORLD),
        "MPI_Allgather");
  world_hosts.clear();
  for (int r = 0; r < size; ++r)
    world_hosts.emplace_back(all.data() + static_cast<size_t>(r) * kLen);
}

}  // namespace

const std::vector<std::string>& hosts() {
  return world_hosts;
}

Group world(const Options& opt) {
  if (!launched()) {
    Group alone;
    alone.set_options(opt);
    return alone;
  }
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    std::atexit(finalize_at_exit);
    check(MPI_Comm_dup(MPI_COMM_WORLD, &failure_comm), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(failure_comm, MPI_ERRORS_RETURN);
    gather_hosts();
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    // PARALLAMA_PROGRESS_US: the progress thread's interval while operations are in flight
    // (0 turns the thread off, to measure what it gives). By default 200 us when the ranks span
    // several hosts, where messages cross a network that only MPI calls keep moving. On one host
    // the ranks' shared memory moves inside the training loop's own calls (a bucket's all-reduce
    // is hidden as well without the thread), and polling there takes time from ranks that fill
    // every core (3% of a 2-rank step on 2 cores): the thread then only answers pings, every 5 ms.
    const char* us = std::getenv("PARALLAMA_PROGRESS_US");
    const bool one_host =
        std::all_of(world_hosts.begin(), world_hosts.end(),
                    [](const std::string& h) { return h == world_hosts.front(); });
    const int interval = us ? std::atoi(us) : one_host ? 5000 : 200;
    if (provided >= MPI_THREAD_MULTIPLE && size > 1 && interval > 0)
      progress::start(MPI_COMM_WORLD, interval);
  }
  return Group(std::make_shared<MpiBackend>(MPI_COMM_WORLD), opt);
}

std::optional<std::vector<std::string>> gather_failures(const std::string& line, double wait_s) {
  if (failure_comm == MPI_COMM_NULL) return std::nullopt;
  MPI_Request req = MPI_REQUEST_NULL;
  if (MPI_Ibarrier(failure_comm, &req) != MPI_SUCCESS) return std::nullopt;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_s);
  for (int done = 0;;) {
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return std::nullopt;
    if (done) break;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;  // some did not fail
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Every process is here: rank 0 gets every line.
  int rank = 0, size = 1;
  MPI_Comm_rank(failure_comm, &rank);
  MPI_Comm_size(failure_comm, &size);
  const int len = static_cast<int>(std::min<size_t>(line.size(), 1 << 16));
  std::vector<int> lens(size), displs(size);
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, failure_comm);
  int total = 0;
  for (int r = 0; r < size; ++r) displs[r] = total, total += lens[r];
  std::string all(rank == 0 ? total : 0, '\0');
  MPI_Gatherv(line.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0,
              failure_comm);
  std::vector<std::string> lines;
  if (rank == 0)
    for (int r = 0; r < size; ++r) lines.push_back(all.substr(displs[r], lens[r]));
  return lines;
}

void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  // The launcher forwards a rank's output from a pipe, and an abort can end the job before it has
  // read the line just written: give it a moment, so the reason reaches the user.
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace parallama::comm
