#include "parallel/sync.h"

#include <chrono>
#include <cmath>

#include "optim/schedule.h"
#include "parallel/ps_protocol.h"
#include "tensor/error.h"
#include "tensor/hash.h"

namespace parallama {

Roles make_roles(comm::Group world, const SyncConfig& cfg) {
  Roles r;
  r.world = world;
  r.num_servers = cfg.parallel.servers();
  r.num_workers = world.size() - r.num_servers;
  if (r.num_workers < 1)
    throw Error(std::string("--sync ") + sync_name(cfg.parallel.strategy.sync) + " with " +
                std::to_string(r.num_servers) + " servers needs more than " +
                std::to_string(world.size()) + " processes");
  r.server = world.rank() >= r.num_workers;
  comm::Group mine = world.split(r.server ? 1 : 0, world.rank());
  r.workers = r.all_workers = mine;  // for a server: the group of the servers
  return r;
}

std::pair<int64_t, int64_t> server_slice(int64_t total, int servers, int s) {
  const auto counts = comm::even_counts(total, servers);
  int64_t lo = 0;
  for (int i = 0; i < s; ++i) lo += counts[i];
  return {lo, lo + counts[s]};
}

namespace {

// Loss scaling: an overflowed step is skipped (the parameters and optimizer state stay).
bool skips(const Replica& st, SyncStep& out) {
  out.skipped = st.skip_nonfinite && !std::isfinite(out.grad_norm);
  return out.skipped;
}

// Error feedback (int8, powersgd): the L2 norm of what this rank's compression has dropped and not
// yet sent. A skipped step (an fp16 overflow) forgets it: its gradients, with the residual added,
// are not finite and go unused.
void report_residual(GradReducer& red, SyncStep& out) {
  std::vector<float>& r = red.residual();
  if (r.empty()) return;
  if (out.skipped) std::fill(r.begin(), r.end(), 0.0f);
  double sq = 0;
#pragma omp parallel for reduction(+ : sq) schedule(static)
  for (size_t i = 0; i < r.size(); ++i) sq += double(r[i]) * r[i];
  out.extra["residual_norm"] = std::sqrt(sq);
}

class AllReduceSync : public Synchronizer {
 public:
  AllReduceSync(const SyncConfig& cfg, Roles& r, Replica& st)
      : cfg_(cfg),
        reducer_(r.workers, st.grads,
                 static_cast<int64_t>(cfg.parallel.grads.bucket_mb * (1 << 20)),
                 cfg.parallel.grads.compress, cfg.parallel.grads.sparse_embedding,
                 cfg.parallel.grads.compress_after, cfg.parallel.grads.powersgd_rank),
        st_(st) {}
  void before_last_backward(int64_t step) override { reducer_.begin(step, st_.unscale); }
  std::function<void(int64_t)> hook() override {
    return [this](int64_t off) { reducer_.ready_from(off); };
  }
  GradReducer* reducer() override { return &reducer_; }
  SyncStep update(Replica& st, float lr, int64_t) override {
    const ReduceStats rs = reducer_.finish();
    SyncStep out;
    if (st.tied.size() > 1) st.tied.all_reduce(st.grads.data() + st.tied_offset, st.tied_numel);
    out.grad_norm = global_grad_norm(st.grads, st.model, st.counts_replicated) * st.unscale;
    if (skips(st, out)) {
      report_residual(reducer_, out);
      return out;
    }
    st.optim.step(st.params, st.grads, lr, 0, -1,
                  clip_factor(out.grad_norm, cfg_.grad_clip) * st.unscale);
    out.extra["buckets"] = rs.buckets;
    if (rs.buckets) out.extra["comm_s"] = rs.comm_s, out.extra["comm_exposed_s"] = rs.exposed_s;
    report_residual(reducer_, out);
    return out;
  }

 private:
  const SyncConfig& cfg_;
  GradReducer reducer_;
  const Replica& st_;  // its loss scale, for the residual (see GradReducer::begin)
};

// ZeRO-1 and ZeRO-2 (Rajbhandari et al. 2020): each bucket's gradients are reduce-scattered as
// backward finishes them (overlapped like the all-reduce), every rank updates the piece of each
// bucket it owns, and each bucket's all-gather of the updated parameters starts as soon as its
// piece is updated. ZeRO-1 reduce-scatters in place (the summed piece lands at the start of its
// bucket in the gradient buffer); ZeRO-2 into a shard of its own, then hands the full gradient
// buffer's memory back: between steps only the owned shard of the gradients exists.
class ZeroSync : public Synchronizer {
 public:
  ZeroSync(const SyncConfig& cfg, Roles& r, Replica& st)
      : cfg_(cfg), dp_(r.workers), stage_(st.zero_stage), z_(plan_of(st)), st_(st) {
    if (stage_ >= 2) shard_.resize(static_cast<size_t>(z_.owned));
    const size_t n = z_.buckets.size();
    for (size_t i = 0; i < n; ++i)
      piece_.push_back(stage_ >= 2 ? shard_.data() + z_.piece_at[i]
                                   : st.grads.data() + z_.buckets[i].begin);
    for (const OwnedRun& run : z_.runs)  // the bucket each owned run is the piece of
      for (size_t i = 0; i < n; ++i)
        if (z_.piece_begin[i] == run.begin && z_.counts[i][dp_.rank()] > 0)
          run_grads_.push_back(piece_[i]);
    if (run_grads_.size() != z_.runs.size()) throw Error("ZeRO: runs and buckets disagree");
    reducer_ = std::make_unique<GradReducer>(
        r.workers, st.grads, z_, piece_, cfg.parallel.grads.compress,
        cfg.parallel.grads.compress_after, cfg.parallel.grads.powersgd_rank);
  }
  static const ZeroPlan& plan_of(const Replica& st) {
    if (!st.zero || st.zero->owned != st.optim.state_size())
      throw Error("ZeRO: the optimizer was not built for this division of the gradients");
    return *st.zero;
  }
  void before_last_backward(int64_t step) override { reducer_->begin(step, st_.unscale); }
  std::function<void(int64_t)> hook() override {
    return [this](int64_t off) { reducer_->ready_from(off); };
  }
  GradReducer* reducer() override { return reducer_.get(); }
  bool leaves_gradients_zero() const override { return stage_ >= 2; }
  int64_t gradient_shard_bytes() const override {
    return static_cast<int64_t>(shard_.size() * sizeof(float));
  }
  SyncStep update(Replica& st, float lr, int64_t) override {
    const ReduceStats rs = reducer_->finish();
    if (stage_ >= 2) st.grads.release();
    const int d = dp_.rank();
    if (st.tied.size() > 1)  // both stages divide the tied table's bucket alike
      for (size_t i = 0; i < z_.buckets.size(); ++i)
        if (z_.buckets[i].begin == st.tied_offset) st.tied.all_reduce(piece_[i], z_.counts[i][d]);
    double sq =
        dp_.sum(owned_sq_sum(st.params.layout(), z_.runs, run_grads_, st.counts_replicated));
    if (st.model.size() > 1) sq = st.model.sum(sq);
    SyncStep out;
    out.grad_norm = std::sqrt(sq) * st.unscale;
    out.extra["buckets"] = rs.buckets;
    out.extra["comm_s"] = rs.comm_s, out.extra["comm_exposed_s"] = rs.exposed_s;
    report_residual(*reducer_, out);
    if (skips(st, out)) return out;  // every rank alike: the norm is global
    // Buckets in flat order (they were made from the end); each all-gather starts once every
    // owned run up to its piece is updated.
    std::vector<comm::Request> gathers;
    size_t next = z_.buckets.size();
    auto launch_through = [&](int64_t flat_end) {
      for (; next > 0 && z_.piece_begin[next - 1] + z_.counts[next - 1][d] <= flat_end; --next) {
        const size_t i = next - 1;
        gathers.push_back(dp_.iall_gather(st.params.data() + z_.piece_begin[i],
                                          st.params.data() + z_.buckets[i].begin, z_.counts[i]));
      }
    };
    st.optim.step_owned(st.params, run_grads_, lr,
                        clip_factor(out.grad_norm, cfg_.grad_clip) * st.unscale,
                        [&](size_t r) { launch_through(z_.runs[r].end); });
    launch_through(st.params.size());
    for (auto& q : gathers) q.wait();
    return out;
  }

 private:
  const SyncConfig& cfg_;
  comm::Group dp_;
  int stage_;
  const ZeroPlan& z_;
  Buffer shard_;                         // ZeRO-2: this rank's summed gradients
  std::vector<float*> piece_;            // per bucket: where this rank's summed piece lands
  std::vector<const float*> run_grads_;  // per owned run: its gradients
  std::unique_ptr<GradReducer> reducer_;
  const Replica& st_;
};

// Local SGD and DiLoCo: every worker steps on its own gradients; replicas meet every H steps.
class LocalSync : public Synchronizer {
 public:
  LocalSync(const SyncConfig& cfg, Roles& r, Replica& st, bool diloco)
      : cfg_(cfg),
        workers_(r.workers),
        diloco_(diloco),
        wire_(diloco ? wire_dtype(cfg.parallel.strategy.diloco_compress) : DType::F32) {
    if (diloco_) {  // the outer parameters start as the initial ones; outer momentum at zero
      ws_.outer.assign(st.params.data(), st.params.data() + st.params.size());
      ws_.momentum.assign(st.params.size(), 0.0f);
      if (wire_ != DType::F32) ws_.residual.assign(st.params.size(), 0.0f);
    }
  }
  WorkerState* worker_state() override { return &ws_; }
  bool global_batch() const override { return false; }
  SyncStep update(Replica& st, float lr, int64_t step) override {
    SyncStep out;
    out.grad_norm = grad_norm(st.grads);
    clip_grads(st.grads, out.grad_norm, cfg_.grad_clip);
    st.optim.step(st.params, st.grads, lr);
    const int period =
        diloco_ ? cfg_.parallel.strategy.diloco_inner_steps : cfg_.parallel.strategy.local_period;
    if (step % period != 0 || workers_.size() == 1) return out;
    float* p = st.params.data();
    const int64_t n = st.params.size();
    out.extra["synced"] = true;
    const float inv = 1.0f / static_cast<float>(workers_.size());
    if (diloco_ && wire_ != DType::F32) return outer_step(p, n, out);
    workers_.all_reduce(p, n);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] *= inv;
    if (!diloco_) return out;
    // Outer step: the averaged change is a pseudo-gradient for Nesterov SGD on the outer copy.
    const float mu = cfg_.parallel.strategy.diloco_outer_momentum,
                olr = cfg_.parallel.strategy.diloco_outer_lr;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float delta = ws_.outer[i] - p[i];
      ws_.momentum[i] = mu * ws_.momentum[i] + delta;
      ws_.outer[i] -= olr * (delta + mu * ws_.momentum[i]);
      p[i] = ws_.outer[i];
    }
    return out;
  }

 private:
  // DiLoCo with a compressed outer gradient: each worker's change outer - p, plus what its last
  // encoding dropped, is summed on the wire (int8 or int4, the sum decoded alike everywhere); what
  // this encoding drops is kept for the next outer step. The mean change steps the outer copy as
  // above, and every worker restarts from it.
  SyncStep& outer_step(float* p, int64_t n, SyncStep& out) {
    const float mu = cfg_.parallel.strategy.diloco_outer_momentum,
                olr = cfg_.parallel.strategy.diloco_outer_lr,
                inv = 1.0f / static_cast<float>(workers_.size());
    delta_.resize(static_cast<size_t>(n));
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) delta_[i] = ws_.outer[i] - p[i] + ws_.residual[i];
    workers_.iall_reduce_wire(delta_.data(), n, wire_, ws_.residual.data()).wait();
    double sq = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : sq)
    for (int64_t i = 0; i < n; ++i) {
      const float delta = delta_[i] * inv;
      ws_.momentum[i] = mu * ws_.momentum[i] + delta;
      ws_.outer[i] -= olr * (delta + mu * ws_.momentum[i]);
      p[i] = ws_.outer[i];
      sq += double(ws_.residual[i]) * ws_.residual[i];
    }
    out.extra["residual_norm"] = std::sqrt(sq);
    return out;
  }

  const SyncConfig& cfg_;
  comm::Group workers_;
  bool diloco_;
  DType wire_;  // the outer gradient's wire type (F32: the exact average of the parameters)
  WorkerState ws_;
  std::vector<float> delta_;  // compressed: the outer gradient
};

// The worker side of both parameter-server strategies.
class PsWorker : public Synchronizer {
 public:
  PsWorker(const SyncConfig& cfg, Roles& r, bool async)
      : cfg_(cfg), roles_(r), async_(async), version_(r.num_servers, 0) {}
  bool global_batch() const override { return !async_; }
  SyncStep update(Replica& st, float, int64_t step) override {
    SyncStep out;
    if (async_) {  // each push is applied alone: the worker clips its own gradient
      out.grad_norm = grad_norm(st.grads);
      clip_grads(st.grads, out.grad_norm, cfg_.grad_clip);
    }
    const int S = roles_.num_servers;
    std::vector<ps::PushHead> push(S);
    std::vector<ps::PullHead> pull(S);
    std::vector<comm::Request> reqs;
    for (int s = 0; s < S; ++s) {
      const auto [lo, hi] = server_slice(st.params.size(), S, s);
      const int peer = roles_.num_workers + s;
      push[s] = {step, version_[s], last_ ? 1 : 0};
      reqs.push_back(roles_.world.isend(&push[s], sizeof(ps::PushHead), peer, ps::kPushHead));
      reqs.push_back(roles_.world.isend(st.grads.data() + lo, (hi - lo) * 4, peer, ps::kPushData));
      reqs.push_back(roles_.world.irecv(&pull[s], sizeof(ps::PullHead), peer, ps::kPullHead));
      reqs.push_back(roles_.world.irecv(st.params.data() + lo, (hi - lo) * 4, peer, ps::kPullData));
    }
    for (auto& r : reqs) r.wait();
    for (int s = 0; s < S; ++s) {
      version_[s] = pull[s].version;
      if (pull[s].signal) peer_signal_ = static_cast<int>(pull[s].signal);
    }
    if (!async_)
      out.grad_norm = pull[0].grad_norm;
    else
      out.extra = {{"staleness_max", pull[0].staleness_max},
                   {"staleness_mean", pull[0].staleness_mean},
                   {"lead_max", pull[0].lead_max}};
    // What each server moved since this worker's last pull, from the counters it reports.
    auto& servers = out.extra["server_bytes"] = nlohmann::json::array();
    server_seen_.resize(S, {0.0, 0.0});
    for (int s = 0; s < S; ++s) {
      servers.push_back(
          {pull[s].sent - server_seen_[s].first, pull[s].received - server_seen_[s].second});
      server_seen_[s] = {pull[s].sent, pull[s].received};
    }
    return out;
  }
  void gather_state(Replica& st, int64_t) override {
    if (roles_.world.rank() != 0) return;
    ps::receive_state(roles_, st);
  }
  void set_last_step() override { last_ = true; }
  int peer_signal() const override { return peer_signal_; }

 private:
  bool last_ = false;
  int peer_signal_ = 0;
  const SyncConfig& cfg_;
  Roles& roles_;
  bool async_;
  std::vector<int64_t> version_;
  std::vector<std::pair<double, double>> server_seen_;
};

}  // namespace

std::unique_ptr<Synchronizer> make_synchronizer(const SyncConfig& cfg, Roles& roles, Replica& st) {
  switch (cfg.parallel.strategy.sync) {
    case Sync::allreduce:
      if (st.zero_stage > 0) return std::make_unique<ZeroSync>(cfg, roles, st);
      return std::make_unique<AllReduceSync>(cfg, roles, st);
    case Sync::local:
    case Sync::diloco:
      return std::make_unique<LocalSync>(cfg, roles, st,
                                         cfg.parallel.strategy.sync == Sync::diloco);
    default:
      return std::make_unique<PsWorker>(cfg, roles, cfg.parallel.strategy.sync == Sync::ps_async);
  }
}

void check_replicas_equal(const ParamBuffer& params, comm::Group& replicas, int64_t step) {
  if (replicas.size() == 1) return;
  const uint64_t mine = fnv1a64(params.data(), static_cast<size_t>(params.size()) * sizeof(float));
  std::vector<uint64_t> all(static_cast<size_t>(replicas.size()));
  replicas.all_gather(&mine, all.data(), std::vector<int64_t>(all.size(), 1), DType::U64);
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      throw Error("replicas drifted: after step " + std::to_string(step) + ", data-parallel rank " +
                  std::to_string(r) + " holds other parameters than rank 0");
}

}  // namespace parallama
