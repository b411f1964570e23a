#include "comm/mpi/progress.h"

#include "comm/group.h"

#include <atomic>
#include <chrono>
#include <thread>

namespace parallama::comm::progress {

namespace {

constexpr int kPingTag = 1, kPongTag = 2;
constexpr int kWaiting = 1, kBusy = 2;  // what a pong says of its process

std::thread worker;
std::atomic<bool> stopping{false}, started{false};
std::atomic<int> in_flight{0};
MPI_Comm ping_comm = MPI_COMM_NULL;

void loop(int busy_us) {
  int ping = 0, pong = 1;
  MPI_Request incoming = MPI_REQUEST_NULL;
  MPI_Irecv(&ping, 1, MPI_INT, MPI_ANY_SOURCE, kPingTag, ping_comm, &incoming);
  std::vector<MPI_Request> replies;
  while (!stopping.load(std::memory_order_acquire)) {
    int flag = 0;
    MPI_Status st;
    // Every call into MPI also advances every operation in flight.
    MPI_Test(&incoming, &flag, &st);
    if (flag) {
      pong = waiting_now() ? kWaiting : kBusy;
      MPI_Request r = MPI_REQUEST_NULL;
      MPI_Isend(&pong, 1, MPI_INT, st.MPI_SOURCE, kPongTag, ping_comm, &r);
      replies.push_back(r);
      MPI_Irecv(&ping, 1, MPI_INT, MPI_ANY_SOURCE, kPingTag, ping_comm, &incoming);
    }
    for (size_t i = 0; i < replies.size();) {
      int done = 0;
      MPI_Test(&replies[i], &done, MPI_STATUS_IGNORE);
      if (done)
        replies.erase(replies.begin() + static_cast<long>(i));
      else
        ++i;
    }
    const bool busy = in_flight.load(std::memory_order_relaxed) > 0;
    std::this_thread::sleep_for(std::chrono::microseconds(busy ? busy_us : 5000));
  }
  MPI_Cancel(&incoming);
  MPI_Wait(&incoming, MPI_STATUS_IGNORE);
  // Replies to a rank that is gone may never complete: leave them to MPI_Finalize / exit.
  for (MPI_Request& r : replies) MPI_Request_free(&r);
}

}  // namespace

void start(MPI_Comm world, int busy_interval_us) {
  if (started.exchange(true)) return;
  MPI_Comm_dup(world, &ping_comm);
  MPI_Comm_set_errhandler(ping_comm, MPI_ERRORS_RETURN);
  worker = std::thread(loop, busy_interval_us);
}

void stop() {
  if (!started.load() || !worker.joinable()) return;
  stopping.store(true, std::memory_order_release);
  worker.join();
}

bool running() {
  return started.load() && !stopping.load();
}

void op_started() {
  in_flight.fetch_add(1, std::memory_order_relaxed);
}
void op_finished() {
  in_flight.fetch_sub(1, std::memory_order_relaxed);
}

std::vector<int> unanswered(const std::vector<int>& world_ranks, double wait_s,
                            std::vector<int>* busy) {
  if (!running()) return {};
  const size_t n = world_ranks.size();
  int ping = 0;
  // Kept past the return when a receive is cancelled: a cancel that comes too late still writes.
  auto* pongs = new std::vector<int>(n, 0);
  std::vector<MPI_Request> sends(n, MPI_REQUEST_NULL), recvs(n, MPI_REQUEST_NULL);
  for (size_t i = 0; i < n; ++i) {
    MPI_Irecv(&(*pongs)[i], 1, MPI_INT, world_ranks[i], kPongTag, ping_comm, &recvs[i]);
    MPI_Isend(&ping, 1, MPI_INT, world_ranks[i], kPingTag, ping_comm, &sends[i]);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_s);
  std::vector<bool> heard(n, false);
  for (size_t left = n; left > 0 && std::chrono::steady_clock::now() < deadline;) {
    for (size_t i = 0; i < n; ++i) {
      int done = 0;
      if (!heard[i] && MPI_Test(&recvs[i], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done)
        heard[i] = true, --left;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<int> silent;
  for (size_t i = 0; i < n; ++i) {
    if (heard[i] && busy && (*pongs)[i] == kBusy) busy->push_back(world_ranks[i]);
    if (!heard[i]) {
      silent.push_back(world_ranks[i]);
      MPI_Cancel(&recvs[i]);
      MPI_Request_free(&recvs[i]);
    }
    MPI_Request_free(&sends[i]);  // a ping to a rank that is gone may never leave
  }
  if (silent.empty()) delete pongs;
  return silent;
}

}  // namespace parallama::comm::progress
