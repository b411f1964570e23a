// The stages of a training run that repeat (step, evaluate, checkpoint, report) and its end
// (finish): see train/trainer_run.h.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>

#include "io/checkpoint.h"
#include "io/param_io.h"
#include "io/paths.h"
#include "kernels/cross_entropy.h"
#include "optim/schedule.h"
#include "tensor/error.h"
#include "tensor/hash.h"
#include "train/auto_run.h"
#include "train/compress_state.h"
#include "train/report.h"
#include "train/trace.h"
#include "train/trainer_run.h"
#include "train/worker_state.h"

namespace fs = std::filesystem;

namespace parallama {

using Clock = std::chrono::steady_clock;

// Bytes of the model's largest tensor, whole.
static double largest_tensor_bytes(const LlamaConfig& model) {
  int64_t most = 0;
  const ParamLayout whole(model, ModelShard::whole(model));
  for (const ParamSpec& s : whole.specs()) most = std::max(most, s.numel);
  return static_cast<double>(most) * sizeof(float);
}

// Every worker's training memory in bytes, gathered over the workers: parameters, gradients (the
// gradient buffer's pages in memory, ZeRO-2 handing them back, plus a ZeRO shard) and optimizer
// state (ZeRO: this rank's pieces).
static nlohmann::json memory_summary(const TrainState& st, const Synchronizer& sync,
                                     comm::Group& workers) {
  const double mine[4] = {
      static_cast<double>(st.params.size() * sizeof(float)),
      static_cast<double>(st.grads.resident_bytes() + sync.gradient_shard_bytes()),
      static_cast<double>(st.optim.state_bytes()),
      static_cast<double>(st.model.activation_bytes())};
  std::vector<double> all(4 * workers.size());
  workers.all_gather(mine, all.data(), std::vector<int64_t>(workers.size(), 4), DType::F64);
  nlohmann::json out = nlohmann::json::array();
  for (int r = 0; r < workers.size(); ++r)
    out.push_back({{"rank", r},
                   {"parameters", all[4 * r]},
                   {"gradients", all[4 * r + 1]},
                   {"optimizer_state", all[4 * r + 2]},
                   {"activations", all[4 * r + 3]}});
  return out;
}

// The planner's prediction against this run (train/auto_run.h): the median step after the
// first, and every rank's memory as memory_summary counts it.
static nlohmann::json run_prediction(const RunConfig& cfg, const std::optional<Device>& device,
                                     std::vector<double> step_s, const nlohmann::json& memory,
                                     std::string* line) {
  if (step_s.size() > 1) step_s.erase(step_s.begin());  // the first step warms up
  std::sort(step_s.begin(), step_s.end());
  const double median = step_s.empty() ? 0.0 : step_s[step_s.size() / 2];
  std::vector<double> bytes;
  for (const auto& r : memory)
    bytes.push_back(r["parameters"].get<double>() + r["gradients"].get<double>() +
                    r["optimizer_state"].get<double>() + r["activations"].get<double>());
  return prediction_json(cfg, device, median, bytes, line);
}

// Every stage's timeline, gathered over the pipeline group to its first stage, which writes
// them (the pipeline of replica 0, tensor-parallel rank 0, when `writes`).
static void write_pipeline_trace(Pipeline& pipe, comm::Group& pp, bool writes,
                                 const std::string& path) {
  std::vector<double> mine;
  for (const PipeEvent& e : pipe.events())
    mine.insert(mine.end(), {double(e.kind), double(e.micro), double(e.chunk), e.start, e.end});
  std::vector<int64_t> counts(pp.size());
  const int64_t n = static_cast<int64_t>(mine.size());
  pp.all_gather(&n, counts.data(), std::vector<int64_t>(pp.size(), 1), DType::I64);
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  std::vector<double> all(total);
  pp.all_gather(mine.data(), all.data(), counts, DType::F64);
  if (!writes) return;
  std::vector<TraceEvent> events;
  for (int r = 0, at = 0; r < pp.size(); at += static_cast<int>(counts[r++]))
    for (int64_t i = at; i < at + counts[r]; i += 5) {
      const PipeEvent e{static_cast<int>(all[i]), static_cast<int>(all[i + 1]),
                        static_cast<int>(all[i + 2]), all[i + 3], all[i + 4]};
      events.push_back({e.name(), kPipeEventKinds[e.kind], r, e.start, e.end});
    }
  write_chrome_trace(path, events);
}

// The run report, rewritten; a report that cannot be written is a warning, not the run's end.
static void refresh_report(const std::string& out_dir,
                           const std::function<void(std::string)>& say) {
  try {
    write_report(out_dir, "", 0);
  } catch (const Error& e) {
    say(std::string("warning: the run report was not written: ") + e.what());
  }
}

int64_t Trainer::step(int64_t at) {
  const TrainConfig& tc = cfg_.train;
  const int64_t B = tc.batch_size, T = tc.seq_len, K = tc.micro_batches;
  const int64_t global = global_batch();
  comm::Group& dp = roles_.workers;
  TrainState& st = *st_;
  const auto t0 = Clock::now();
  const double waited0 = comm::wait_seconds();
  const comm::Group* servers = roles_.num_servers ? &roles_.world : nullptr;
  // Bytes per mesh axis of the training steps alone (see train/traffic.h).
  const AxisBytes axes0 = axis_bytes(*mesh_, servers);
  int64_t valid = 0;
  const int share = balancer_ ? balancer_->share(dp.rank()) : static_cast<int>(K);
  const int first_micro = balancer_ ? balancer_->first(dp.rank()) : 0;
  for (int k = 0; k < share; ++k) {
    int32_t *in = tokens_.data() + k * B * T, *tgt = targets_.data() + k * B * T;
    if (balancer_)
      loader_->global_micro_batch(first_micro + k, B, in, tgt);
    else
      loader_->micro_batch(k, B, in, tgt);
    for (int64_t i = 0; i < B * T; ++i) valid += tgt[i] != kernels::kIgnoreIndex;
  }
  // Every rank scales by the global count of targets, so the summed gradients are those of
  // the global mean loss, whatever each rank holds.
  if (sync_->global_batch()) valid = dp.sum(valid);
  double loss_sum = st.forward_backward(tokens_.data(), targets_.data(), share, valid, *sync_, at);
  // The global mean when workers share a batch; otherwise this worker's own.
  if (sync_->global_batch()) loss_sum = dp.sum(loss_sum);
  const double loss = valid ? loss_sum / static_cast<double>(valid) : 0.0;
  if (!std::isfinite(loss))
    throw Error("loss became " + std::to_string(loss) + " at step " + std::to_string(at) +
                "; lower optim.lr or set train.grad_clip");
  const float lr = lr_at(at, cfg_.optim.lr, cfg_.optim.min_lr, cfg_.optim.warmup_steps, tc.steps);
  const double loss_scale = st.scaler.scale();
  // A signal to any rank: every worker agrees to make this step the last.
  int64_t stop_signal = 0;
  if (run_.preemptible) {
    stop_signal = std::max(PreemptionGuard::signal_received(), sync_->peer_signal());
    roles_.all_workers.all_reduce(&stop_signal, 1, DType::I64, comm::ReduceOp::Max);
    if (at == run_.last) stop_signal = 0;  // the run ends here anyway
    if (stop_signal) sync_->set_last_step();
  }
  const SyncStep upd = st.update(*sync_, lr, at);
  // The replicas are equal after every step of --sync allreduce, and after the steps where local
  // SGD and DiLoCo meet.
  if (cfg_.parallel.watch.check_collectives && !upd.skipped &&
      (cfg_.parallel.strategy.sync == Sync::allreduce || upd.extra.contains("synced")))
    check_replicas_equal(st.params, dp, at);
  const AxisBytes axes = axis_bytes(*mesh_, servers) - axes0;
  watch_.axes_total += axes;
  loader_->advance(global);

  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  run_.step_s.push_back(dt);
  const double waited = comm::wait_seconds() - waited0;
  const StepTimes times{dt - waited, waited, mesh_->pp.rank()};
  nlohmann::json j = {{"step", at},
                      {"loss", loss},
                      {"lr", lr},
                      {"grad_norm", upd.grad_norm},
                      {"tokens_per_s", static_cast<double>(global * T) / dt}};
  j.update(upd.extra);
  if (upd.extra.contains("residual_norm")) run_.residual_norm = upd.extra["residual_norm"];
  if (st.scaler.enabled()) {
    j["loss_scale"] = loss_scale;
    if (upd.skipped) {
      j["skipped"] = true;
      char line[160];
      std::snprintf(line, sizeof line,
                    "step %lld: gradients overflowed fp16 at loss scale %g; step skipped, "
                    "scale now %g",
                    static_cast<long long>(at), loss_scale, st.scaler.scale());
      say(line);
    }
  }
  if (st.pipeline) {  // this stage's step (rank 0: the first stage)
    const PipeStepStats& ps = st.pipeline->last_step();
    j["pp_bubble"] = ps.step_s > 0 ? 1.0 - ps.busy_s / ps.step_s : 0.0;
    j["pp_recv_wait_s"] = ps.recv_s;
    j["pp_peak_micro_batches"] = ps.peak_in_flight;
    j["pp_peak_activation_bytes"] = ps.peak_activation_bytes;
  }
  const comm::Traffic mine{static_cast<double>(world_.bytes_sent() - watch_.sent0),
                           static_cast<double>(world_.bytes_received() - watch_.received0)};
  watch_.sent0 = world_.bytes_sent(), watch_.received0 = world_.bytes_received();
  // Every rank's bytes of this step (the gathering counted in the next one's sent and
  // received); ps-async workers are never in step: only rank 0's own.
  add_step_traffic(j, roles_.all_workers, run_.async, world_.size() > 1, mine, axes, times);
  for (const std::string& line : watch_.stragglers.observe(at, worker_times(j))) say(line);
  if (watch_.links->due(at)) {
    for (const std::string& line : watch_.links->probe(at)) say(line);
    nlohmann::json rates = nlohmann::json::array();
    for (const LinkRate& l : watch_.links->last())
      rates.push_back({{"from", l.from}, {"to", l.to}, {"mb_per_s", l.mb_per_s}});
    j["link_mb_per_s"] = rates;
  }
  if (balancer_) {
    j["shares"] = balancer_->shares();  // micro-batches per data-parallel rank in this step
    if (balancer_->observe(dp, times.compute_s)) {
      std::string line = "step " + std::to_string(at) + ": shares of the next steps";
      for (const int n : balancer_->shares()) line += " " + std::to_string(n);
      say(line + " micro-batches (by measured speed)");
    }
  }
  if ((tc.val_every > 0 && at % tc.val_every == 0) || at == tc.steps) evaluate(at, j);
  if (progress_) progress_->step(j, global * T);
  run_.loss = loss;
  if (is_checkpoint(at)) checkpoint(at, loss);
  if (run_.writes && opt_.report_every > 0 && at % opt_.report_every == 0 && at != run_.last)
    report();
  return stop_signal;
}

void Trainer::evaluate(int64_t at, nlohmann::json& metrics) {
  const TrainConfig& tc = cfg_.train;
  const int64_t B = tc.batch_size, T = tc.seq_len;
  TrainState& st = *st_;
  comm::Group& eval_group = sync_->global_batch() ? roles_.workers : alone_;
  const int64_t samples = tc.val_batches * global_batch();
  metrics["val_loss"] =
      st.pipeline
          ? parallama::evaluate(
                [&](const int32_t* in, const int32_t* tgt) {
                  return st.pipeline->forward_only(st.params, in, tgt);
                },
                B, T, data_.val.tokens, samples, eval_group)
                .loss
          : parallama::evaluate(st.model, st.params, data_.val.tokens, samples, eval_group).loss;
  char line[128];
  std::snprintf(line, sizeof line, "step %lld: val_loss %.4f", static_cast<long long>(at),
                metrics["val_loss"].get<double>());
  say(line);
}

void Trainer::checkpoint(int64_t at, double loss) {
  const auto t0 = std::chrono::steady_clock::now();
  wait_for_checkpoint();  // the one before, if it is still being written
  const TrainConfig& tc = cfg_.train;
  TrainState& st = *st_;
  const Mesh& mesh = *mesh_;
  CheckpointState cs;
  cs.step = at;
  cs.data_position = loader_->position();
  cs.extra = {{"config", config_to_json(cfg_)},
              {"layout",
               {{"dp", shape_.dp},
                {"tp", shape_.tp},
                {"pp", shape_.pp},
                {"sync", sync_name(cfg_.parallel.strategy.sync)}}},
              {"rng", {{"data_seed", tc.seed}, {"data_order", "seeded permutation per epoch"}}},
              {"epoch", loader_->epoch()},
              {"loss", loss},
              {"tokenizer_hash", data_.train.header.tokenizer_hash}};
  if (st.scaler.enabled()) cs.extra["loss_scale"] = st.scaler.to_json();
  cs.copy_files = tokenizer_files(data_.tokenizer);
  const std::string dir = (fs::path(tc.out_dir) / ("step-" + std::to_string(at))).string();
  sync_->gather_state(st.replica, at);
  // The tensor-parallel ranks of replica 0 gather whole tensors; rank 0 writes them. Under ZeRO
  // every replica takes part: each holds pieces of the optimizer state; with error feedback too:
  // each holds its own residual (train/compress_state.h); under local and diloco each worker its
  // own parameters and moments (train/worker_state.h).
  GradReducer* red = sync_->reducer();
  WorkerState* ws = mesh.dp.size() > 1 ? sync_->worker_state() : nullptr;
  const bool feedback = red && !red->residual().empty();
  const bool all = cfg_.parallel.grads.zero > 0 || feedback || ws || tc.ckpt_per_rank;
  if (mesh.coord().dp != 0 && !all) return;
  if (tc.ckpt_per_rank) {  // the replicas share out what they hold alike, unless it differs
    cs.per_rank = true;
    const int d = mesh.dp.rank();
    cs.share = ws ? io::PieceShare{0, d == 0 ? 1 : 0} : io::PieceShare{d, mesh.dp.size()};
  }
  if (feedback)
    cs.more_files = [&](const fs::path& tmp) {
      return save_compress_state(*red, st.params.layout(), tmp, *mesh_, run_.writes);
    };
  else if (ws)
    cs.more_files = [&](const fs::path& tmp) {
      return save_worker_state(*ws, st.replica, tmp, *mesh_, run_.writes);
    };
  if (mesh.tied.size() > 1) {  // the two stages' copies of a tied embedding must be one table
    const uint64_t h = fnv1a64(st.params.data() + st.replica.tied_offset,
                               static_cast<size_t>(st.replica.tied_numel) * sizeof(float));
    uint64_t both[2];
    mesh_->tied.all_gather(&h, both, {1, 1}, DType::U64);
    if (both[0] != both[1])
      throw Error(
          "the first and last pipeline stages hold different copies of the tied "
          "embedding at step " +
          std::to_string(at));
    cs.extra["tied_embedding_copies"] = "identical";
  }
  std::function<void()> rest;  // train.ckpt_async: what the saving thread does
  if (tc.ckpt_async && run_.writes && !all && mesh.tp.size() == 1 && mesh.pp.size() == 1) {
    // The writer holds every tensor whole: a copy in memory is the whole checkpoint, and the
    // thread writes it as a process of its own would.
    snapshot_state();
    rest = [this, dir, cs] {
      comm::Group one;
      save_checkpoint(dir, *saving_.params, *saving_.optim, cs, one, one, true);
    };
  } else {
    save_checkpoint(dir, st.params, st.optim, cs, mesh_->tp, mesh_->pp, run_.writes,
                    all ? mesh_->dp : comm::Group(), tc.ckpt_async ? &rest : nullptr,
                    saving_.stage_root);
  }
  double peak = static_cast<double>(io::take_gather_peak_bytes());  // over the savers
  (all ? roles_.all_workers : mesh_->replica).all_reduce(&peak, 1, DType::F64, comm::ReduceOp::Max);
  if (!run_.writes) return;
  const std::string latest = (fs::path(tc.out_dir) / "latest").string(),
                    name = "step-" + std::to_string(at) + "\n";
  if (tc.ckpt_async)
    saving_.thread = std::thread([this, rest = std::move(rest), latest, name] {
      try {
        rest();
        write_file_atomically(latest, name);
      } catch (...) {
        saving_.error = std::current_exception();
      }
    });
  else
    write_file_atomically(latest, name);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++saving_.count, saving_.wait_s += waited,
      saving_.max_wait_s = std::max(saving_.max_wait_s, waited);
  char gathered[128] = "";  // one process writes its tensors as they are: nothing gathered
  if (peak > 0)
    std::snprintf(gathered, sizeof gathered,
                  " (saving gathered at most %.4f MB on a rank (largest tensor %.4f MB))",
                  peak / 1e6, largest_tensor_bytes(cfg_.model) / 1e6);
  say("checkpoint " + dir + gathered + (tc.ckpt_async ? ": in memory, written on a thread" : ""));
}

// The parameters and optimizer state copied into buffers kept from one checkpoint to the next
// (allocated once: no page faults after the first), on all threads.
void Trainer::snapshot_state() {
  const ParamBuffer& p = st_->params;
  const Optimizer& o = st_->optim;
  if (!saving_.params) {
    saving_.params.emplace(p.layout());
    saving_.optim.emplace(o.layout(), o.config());
  }
  auto copy = [](float* to, const float* from, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += 1 << 16)
      std::memcpy(to + i, from + i,
                  sizeof(float) * static_cast<size_t>(std::min<int64_t>(1 << 16, n - i)));
  };
  copy(saving_.params->data(), p.data(), p.size());
  for (int i = 0; i < o.num_states(); ++i) copy(saving_.optim->state(i), o.state(i), p.size());
  saving_.optim->set_steps_taken(o.steps_taken());
}

void Trainer::wait_for_checkpoint() {
  if (!saving_.thread.joinable()) return;
  saving_.thread.join();
  if (std::exception_ptr e = std::exchange(saving_.error, nullptr)) std::rethrow_exception(e);
}

void Trainer::report() {
  refresh_report(cfg_.train.out_dir, [this](const std::string& line) { say(line); });
}

// The end of the run: every stage's peak activations, the pipeline timeline, memory and ZeRO,
// traffic, summary.json, the report.
void Trainer::finish() {
  wait_for_checkpoint();
  TrainState& st = *st_;
  Mesh& mesh = *mesh_;
  const bool stepped = run_.last >= run_.first_step;
  if (st.pipeline && stepped) {  // every stage's peak activation memory
    const PipeStepStats& ps = st.pipeline->last_step();
    const double mine[2] = {double(ps.peak_in_flight), double(ps.peak_activation_bytes)};
    std::vector<double> all(2 * mesh.pp.size());
    mesh.pp.all_gather(mine, all.data(), std::vector<int64_t>(mesh.pp.size(), 2), DType::F64);
    for (int s = 0; s < mesh.pp.size(); ++s) {
      char line[160];
      std::snprintf(line, sizeof line,
                    "stage %d: at most %d micro-batch chunks in flight, peak activations %.2f MB",
                    s, static_cast<int>(all[2 * s]), all[2 * s + 1] / 1e6);
      say(line);
    }
  }
  if (st.pipeline && !cfg_.parallel.layout.pp_trace.empty()) {
    write_pipeline_trace(*st.pipeline, mesh.pp, run_.writes, cfg_.parallel.layout.pp_trace);
    say("pipeline timeline " + cfg_.parallel.layout.pp_trace);
  }
  const nlohmann::json memory = memory_summary(st, *sync_, roles_.all_workers);
  if (cfg_.parallel.grads.zero > 0 && stepped) {
    double opt = 0, most = 0;
    for (const auto& r : memory) {
      opt += r["optimizer_state"].get<double>();
      most = std::max(most, r["optimizer_state"].get<double>());
    }
    char line[200];
    std::snprintf(line, sizeof line,
                  "ZeRO-%d: optimizer state %.3f MB on the largest rank; all %d ranks together "
                  "hold %.3f MB, one copy (without ZeRO, %d copies)",
                  cfg_.parallel.grads.zero, most / 1e6, static_cast<int>(memory.size()), opt / 1e6,
                  shape_.dp);
    say(line);
  }
  const int64_t steps = run_.last - run_.first_step + 1;
  const nlohmann::json traffic =
      traffic_summary(world_, roles_, steps, watch_.axes_total, st.params.size());
  if (run_.writes && stepped) {
    if (world_.size() > 1)
      for (const auto& r : traffic) say(describe_rank_traffic(r));
    // How long training waited for its checkpoints (with ckpt_async: for the copy to memory).
    const nlohmann::json checkpoints = {
        {"async", cfg_.train.ckpt_async},
        {"count", saving_.count},
        {"wait_s_mean", saving_.count ? saving_.wait_s / saving_.count : 0.0},
        {"wait_s_max", saving_.max_wait_s}};
    nlohmann::json compress = compression_summary(cfg_.parallel);
    if (run_.residual_norm >= 0) compress["residual_norm"] = run_.residual_norm;
    nlohmann::json prediction;  // the planner models --sync allreduce
    if (cfg_.parallel.strategy.sync == Sync::allreduce) {
      std::string line;
      prediction = run_prediction(cfg_, opt_.device, run_.step_s, memory, &line);
      say(line);
    }
    write_file_atomically((fs::path(cfg_.train.out_dir) / "summary.json").string(),
                          nlohmann::json{{"sync", sync_name(cfg_.parallel.strategy.sync)},
                                         {"zero", cfg_.parallel.grads.zero},
                                         {"compress", compress},
                                         {"checkpoints", checkpoints},
                                         {"steps", steps},
                                         {"ranks", traffic},
                                         {"memory", memory},
                                         {"prediction", prediction},
                                         {"stragglers", watch_.stragglers.report()},
                                         {"network_stragglers", watch_.links->report()}}
                                  .dump(1) +
                              "\n");
  }
  if (run_.writes && opt_.report_every > 0) report();
}

}  // namespace parallama
