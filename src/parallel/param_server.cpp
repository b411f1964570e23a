// The server side of --sync ps and --sync ps-async.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "optim/schedule.h"
#include "parallel/ps_protocol.h"
#include "tensor/error.h"

namespace parallama {

namespace ps {

void receive_state(Roles& roles, Replica& st) {
  for (int s = 0; s < roles.num_servers; ++s) {
    const auto [lo, hi] = server_slice(st.params.size(), roles.num_servers, s);
    const int peer = roles.num_workers + s;
    int64_t steps = 0;
    roles.world.recv(&steps, sizeof steps, peer, kStateHead);
    for (int i = 0; i < st.optim.num_states(); ++i)
      roles.world.recv(st.optim.state(i) + lo, (hi - lo) * 4, peer, kStateData);
    st.optim.set_steps_taken(steps);
  }
}

void send_state(Roles& roles, Replica& st, int64_t lo, int64_t hi) {
  const int64_t steps = st.optim.steps_taken();
  roles.world.send(&steps, sizeof steps, 0, kStateHead);
  for (int i = 0; i < st.optim.num_states(); ++i)
    roles.world.send(st.optim.state(i) + lo, (hi - lo) * 4, 0, kStateData);
}

}  // namespace ps

namespace {

using Clock = std::chrono::steady_clock;

void reply(Roles& r, Replica& st, int w, ps::PullHead head, int64_t lo, int64_t hi) {
  head.sent = static_cast<double>(r.world.bytes_sent());
  head.received = static_cast<double>(r.world.bytes_received());
  r.world.send(&head, sizeof head, w, ps::kPullHead);
  r.world.send(st.params.data() + lo, (hi - lo) * 4, w, ps::kPullData);
}

// Synchronous: every step, the sum of all workers' gradients, clipped by the global norm
// (summed over the servers), one optimizer step, the new slice back to every worker.
int64_t serve_sync(const SyncConfig& cfg, Roles& r, Replica& st, const ServerSchedule& sched,
                   int64_t lo, int64_t hi) {
  const int W = r.num_workers;
  const int64_t n = hi - lo;
  std::vector<float> buf(static_cast<size_t>(W) * std::max<int64_t>(n, 1));
  std::vector<ps::PushHead> heads(W);
  int64_t version = 0;
  for (int64_t step = sched.first_step; step <= sched.last_step; ++step) {
    std::vector<comm::Request> reqs;
    for (int w = 0; w < W; ++w) {
      reqs.push_back(r.world.irecv(&heads[w], sizeof(ps::PushHead), w, ps::kPushHead));
      reqs.push_back(r.world.irecv(buf.data() + w * n, n * 4, w, ps::kPushData));
    }
    for (auto& q : reqs) q.wait();
    float* g = st.grads.data() + lo;
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0.0f;
      for (int w = 0; w < W; ++w) sum += buf[w * n + i];  // workers in a fixed order
      g[i] = sum;
      ss += static_cast<double>(sum) * sum;
    }
    const double norm = std::sqrt(r.workers.sum(ss));  // r.workers: the servers' group
    if (cfg.grad_clip > 0 && norm > cfg.grad_clip) {
      const float scale = static_cast<float>(cfg.grad_clip / norm);
      for (int64_t i = 0; i < n; ++i) g[i] *= scale;
    }
    const float lr = lr_at(step, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps, cfg.steps);
    st.optim.step(st.params, st.grads, lr, lo, hi);
    ++version;
    const ps::PullHead head{version, norm, 0, 0, 0, 0, 0, sched.signal ? sched.signal() : 0};
    for (int w = 0; w < W; ++w) reply(r, st, w, head, lo, hi);
    const bool last = heads[0].last != 0;  // the workers agreed on it
    if (sched.is_checkpoint(step) || last) ps::send_state(r, st, lo, hi);
    if (last) return step;
  }
  return sched.last_step;
}

// Asynchronous: each push is applied when it arrives. A worker's next parameters are held back
// while it is more than max-staleness steps ahead of the slowest worker.
void serve_async(const SyncConfig& cfg, Roles& r, Replica& st, const ServerSchedule& sched,
                 int64_t lo, int64_t hi) {
  const int W = r.num_workers;
  const int64_t n = hi - lo, S = cfg.parallel.strategy.ps_max_staleness;
  std::vector<ps::PushHead> heads(W);
  std::vector<comm::Request> head_req(W);
  std::vector<int64_t> done(W, sched.first_step - 1);  // pushes completed per worker
  std::vector<bool> waiting(W, false);                 // applied, reply not sent yet
  for (int w = 0; w < W; ++w)
    head_req[w] = r.world.irecv(&heads[w], sizeof(ps::PushHead), w, ps::kPushHead);
  int64_t version = 0, updates = 0, stale_max = 0, lead_max = 0;
  double stale_sum = 0;
  auto last_progress = Clock::now();
  auto finished = [&] {
    for (int w = 0; w < W; ++w)
      if (done[w] < sched.last_step || waiting[w]) return false;
    return true;
  };
  while (!finished()) {
    bool progress = false;
    for (int w = 0; w < W; ++w) {
      if (waiting[w] || done[w] >= sched.last_step || !head_req[w].test()) continue;
      r.world.recv(st.grads.data() + lo, n * 4, w, ps::kPushData);
      const int64_t stale = version - heads[w].version;
      stale_max = std::max(stale_max, stale);
      stale_sum += static_cast<double>(stale);
      ++updates;
      // The schedule advances one step per round of W updates.
      const int64_t as_step = (updates + W - 1) / W + (sched.first_step - 1);
      const float lr =
          lr_at(as_step, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps, cfg.steps);
      st.optim.step(st.params, st.grads, lr, lo, hi);
      ++version;
      done[w] = heads[w].step;
      waiting[w] = true;
      if (done[w] < sched.last_step)
        head_req[w] = r.world.irecv(&heads[w], sizeof(ps::PushHead), w, ps::kPushHead);
      progress = true;
    }
    const int64_t slowest = *std::min_element(done.begin(), done.end());
    for (int w = 0; w < W; ++w) {
      if (!waiting[w]) continue;
      const int64_t lead = done[w] - slowest;
      if (lead > S && done[w] < sched.last_step) continue;  // too far ahead: hold its parameters
      lead_max = std::max(lead_max, done[w] < sched.last_step ? lead : 0);
      const ps::PullHead head{version,
                              0,
                              static_cast<double>(stale_max),
                              stale_sum / static_cast<double>(updates),
                              static_cast<double>(lead_max),
                              0,
                              0,
                              0};
      reply(r, st, w, head, lo, hi);
      waiting[w] = false;
      progress = true;
    }
    if (progress) {
      last_progress = Clock::now();
    } else {
      if (std::chrono::duration<double>(Clock::now() - last_progress).count() >
          cfg.parallel.watch.timeout_s)
        throw Error("parameter server " + std::to_string(r.world.rank()) +
                    ": no worker pushed a gradient for " +
                    std::to_string(static_cast<int>(cfg.parallel.watch.timeout_s)) +
                    " s (a worker died or hangs)");
      std::this_thread::yield();
    }
  }
  if (sched.is_checkpoint(sched.last_step)) ps::send_state(r, st, lo, hi);
}

}  // namespace

int64_t run_parameter_server(const SyncConfig& cfg, Roles& roles, Replica& st,
                             const ServerSchedule& sched) {
  const int s = roles.world.rank() - roles.num_workers;
  const auto [lo, hi] = server_slice(st.params.size(), roles.num_servers, s);
  if (cfg.parallel.strategy.sync == Sync::ps) return serve_sync(cfg, roles, st, sched, lo, hi);
  serve_async(cfg, roles, st, sched, lo, hi);
  return sched.last_step;
}

}  // namespace parallama
