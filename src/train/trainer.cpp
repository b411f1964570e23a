#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>

#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "io/param_io.h"
#include "io/paths.h"
#include "kernels/cross_entropy.h"
#include "optim/schedule.h"
#include "parallel/balance.h"
#include "parallel/mesh.h"
#include "parallel/sync.h"
#include "plan/gemm_peak.h"
#include "plan/plan.h"
#include "tensor/error.h"
#include "tensor/hash.h"
#include "train/link_watch.h"
#include "train/metrics.h"
#include "train/preempt.h"
#include "train/report.h"
#include "train/run_dir.h"
#include "train/stage_time.h"
#include "train/step.h"
#include "train/straggler.h"
#include "train/trace.h"
#include "train/traffic.h"

namespace fs = std::filesystem;

namespace parallama {

using Clock = std::chrono::steady_clock;

EvalResult evaluate(Llama& model, const ParamBuffer& params, const std::vector<int32_t>& tokens,
                    int64_t max_samples, comm::Group& group) {
  auto batch_loss = [&](const int32_t* in, const int32_t* tgt) {
    model.forward(params, in, tgt);
    return std::pair<double, int64_t>{model.loss_sum(), model.valid_targets()};
  };
  return evaluate(batch_loss, model.batch(), model.seq_len(), tokens, max_samples, group);
}

EvalResult evaluate(const BatchLoss& batch_loss, int64_t B, int64_t T,
                    const std::vector<int32_t>& tokens, int64_t max_samples, comm::Group& group) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  int64_t samples = n > T ? (n - 1) / T : 0;
  if (max_samples > 0) samples = std::min(samples, max_samples);
  std::vector<int32_t> in(B * T), tgt(B * T);
  EvalResult r;
  double sum = 0.0;
  // Batch b holds sequences [b·B, b·B + B) and belongs to rank b mod size.
  const int64_t stride = B * group.size();
  for (int64_t first = B * group.rank(); first < samples; first += stride) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const bool real = first + b < samples;
        const int64_t at = (first + b) * T + t;
        in[b * T + t] = real ? tokens[at] : 0;
        tgt[b * T + t] = real ? tokens[at + 1] : kernels::kIgnoreIndex;
      }
    const auto [loss_sum, valid] = batch_loss(in.data(), tgt.data());
    sum += loss_sum;
    r.local_tokens += valid;
    ++r.local_batches;
  }
  sum = group.sum(sum);
  r.tokens = group.sum(r.local_tokens);
  r.loss = r.tokens ? sum / static_cast<double>(r.tokens) : 0.0;
  return r;
}

void check_same_params(const ParamBuffer& params, comm::Group& group) {
  const uint64_t mine = fnv1a64(params.data(), static_cast<size_t>(params.size()) * sizeof(float));
  std::vector<uint64_t> all(group.size());
  group.all_gather(&mine, all.data(), std::vector<int64_t>(group.size(), 1), DType::U64);
  std::string differ;
  for (int r = 1; r < group.size(); ++r)
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw Error("parameters of ranks " + differ +
                " differ from rank 0's at start-up (checksum); "
                "every rank must start from the same seed or checkpoint");
}

namespace {

TokenShard load_split(const std::string& dir, const char* name, const LlamaConfig& m) {
  if (dir.empty())
    throw Error("no training data: set data.dir to a folder made by `parallama prepare`");
  TokenShard s = read_shard((fs::path(dir) / name).string());
  if (s.header.vocab_size > static_cast<uint64_t>(m.vocab_size))
    throw Error(s.path + ": made with a vocabulary of " + std::to_string(s.header.vocab_size) +
                " but model.vocab_size is " + std::to_string(m.vocab_size));
  return s;
}

}  // namespace

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
  const double mine[3] = {
      static_cast<double>(st.params.size() * sizeof(float)),
      static_cast<double>(st.grads.resident_bytes() + sync.gradient_shard_bytes()),
      static_cast<double>(st.optim.state_bytes())};
  std::vector<double> all(3 * workers.size());
  workers.all_gather(mine, all.data(), std::vector<int64_t>(workers.size(), 3),
                     DType::F64);
  nlohmann::json out = nlohmann::json::array();
  for (int r = 0; r < workers.size(); ++r)
    out.push_back({{"rank", r},
                   {"parameters", all[3 * r]},
                   {"gradients", all[3 * r + 1]},
                   {"optimizer_state", all[3 * r + 2]}});
  return out;
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

// out_dir/run.json (train/report.h): what the run report shows of a run that has no checkpoint
// yet. Rewritten at every start (a resumed run may have another layout).
static void write_run_info(const RunConfig& cfg, const MeshShape& shape, int processes, int threads,
                           int64_t from_step, double gemm_peak_gflops) {
  nlohmann::json j = {{"format", 1},
                      {"config", config_to_json(cfg)},
                      {"layout",
                       {{"dp", shape.dp},
                        {"tp", shape.tp},
                        {"pp", shape.pp},
                        {"zero", cfg.parallel.grads.zero},
                        {"sync", sync_name(cfg.parallel.strategy.sync)},
                        {"precision", precision_name(cfg.train.precision)},
                        {"processes", processes},
                        {"threads_per_rank", threads}}},
                      {"parameters", cfg.model.num_params()},
                      {"flops_per_token", model_flops_per_token(cfg.model, cfg.train.seq_len)},
                      {"started_at_step", from_step}};
  if (gemm_peak_gflops > 0) j["gemm_peak_gflops"] = gemm_peak_gflops;
  write_file_atomically((fs::path(cfg.train.out_dir) / kRunInfoFile).string(), j.dump(1) + "\n");
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

// The line that says a resumed checkpoint is already at the run's last step (train.steps, or
// --stop-at), or "" when there are steps to train.
static std::string finished_already(const std::string& ckpt, const nlohmann::json& trainer_json,
                                    int64_t steps, int64_t stop_at) {
  const int64_t at = trainer_json.value("step", int64_t{0});
  const int64_t last = stop_at > 0 ? std::min(stop_at, steps) : steps;
  if (at < last) return "";
  verify_checkpoint_files(ckpt, trainer_json);  // a finished run whose checkpoint is whole
  if (last == steps)
    return ckpt + " is at step " + std::to_string(at) + ", and train.steps is " +
           std::to_string(steps) + ": the run is finished, nothing to do (a larger " +
           "--train.steps continues it)";
  return ckpt + " is at step " + std::to_string(at) + ", at or past --stop-at " +
         std::to_string(stop_at) + ": nothing to do";
}

int train(const RunConfig& cfg, const TrainOptions& opt, comm::Group world) {
  const TrainConfig& tc = cfg.train;
  const int64_t B = tc.batch_size, T = tc.seq_len, K = tc.micro_batches;
  cfg.check_processes(world.size());
  const SyncConfig sc = sync_config(cfg);
  Roles roles = make_roles(world, sc);
  // The workers form the dp × tp × pp mesh; each parameter server stands alone.
  MeshShape shape = roles.server ? MeshShape{} : mesh_shape(cfg);
  if (!roles.server && shape.pp > 1 && shape.pp_balance == PpBalance::measure &&
      shape.pp_layers.empty())
    shape.measured = measure_stage_costs(cfg, roles.all_workers);
  Mesh mesh(roles.server ? comm::Group() : roles.all_workers, shape, cfg.model);
  if (!roles.server) roles.workers = mesh.dp;
  const int workers = shape.dp, rank = world.rank();
  const bool writes = rank == 0;
  const bool async = cfg.parallel.strategy.sync == Sync::ps_async;
  // Everything a user could get wrong is checked before the model is built.
  const TokenShard train_data = load_split(cfg.data.dir, "train.bin", cfg.model);
  const TokenShard val_data = load_split(cfg.data.dir, "val.bin", cfg.model);
  if (train_data.header.tokenizer_hash != val_data.header.tokenizer_hash)
    throw Error(cfg.data.dir + ": train.bin and val.bin were made with different tokenizers");
  const std::string tokenizer_path = tokenizer_in(cfg.data.dir, "--data.dir");
  check_tokenizer_hash(tokenizer_path, train_data.header.tokenizer_hash, train_data.path);
  DataLoader loader(train_data.tokens, T, tc.seed, mesh.coord().dp, workers);
  const int64_t global = B * K * workers;
  if (global > loader.num_samples())
    throw Error("a global batch of " + std::to_string(global) +
                " sequences (batch_size × micro_batches) " + "is larger than the " +
                std::to_string(loader.num_samples()) + " sequences of " + std::to_string(T + 1) +
                " tokens in " + train_data.path);
  if (static_cast<int64_t>(val_data.tokens.size()) <= T)
    throw Error(val_data.path + ": fewer than " + std::to_string(T + 1) + " tokens for validation");
  check_memory(cfg);
  // The run directory: rank 0 locks it (for the whole run), finds the checkpoint to resume, or
  // makes sure a fresh start replaces nobody's checkpoints, and sweeps what interrupted saves
  // left; every rank gets the same answer or the same error.
  std::optional<RunDirLock> lock;
  std::string resume;
  {
    std::exception_ptr error;
    if (world.rank() == 0)
      io::guarded(error, [&] {
        lock.emplace(tc.out_dir);
        resume = resolve_resume(opt.resume, tc.out_dir);
        if (resume.empty()) {
          const std::string removed = claim_for_fresh_start(tc.out_dir, opt.force);
          if (!removed.empty()) std::printf("--force: deleted %s\n", removed.c_str());
        }
        if (const int n = sweep_stale_checkpoint_dirs(tc.out_dir))
          std::printf("removed %d unfinished checkpoint director%s of an interrupted run\n", n,
                      n == 1 ? "y" : "ies");
      });
    io::agree_on_failure(world, error);
    int64_t len = static_cast<int64_t>(resume.size());
    world.broadcast(&len, 1, 0, DType::I64);
    resume.resize(static_cast<size_t>(len));
    if (len > 0) world.broadcast(resume.data(), len, 0, DType::U8);
  }
  // Fine-tuning starts from another checkpoint's weights: the same model and tokenizer.
  const std::string init = resume.empty() ? opt.init : std::string();
  if (!init.empty()) {
    const nlohmann::json init_json = read_trainer_json(init);
    const RunConfig base = checkpoint_config(init_json, init + "/trainer.json");
    if (config_to_json(base)["model"] != config_to_json(cfg)["model"])
      throw Error("--init " + init + ": the checkpoint is of another model (" +
                  config_to_json(base)["model"].dump() + "); use its [model] settings");
    if (init_json["tokenizer_hash"].get<uint64_t>() != train_data.header.tokenizer_hash)
      throw Error("--init " + init + ": the checkpoint's tokenizer is not the one " + cfg.data.dir +
                  " was made with (prepare the data with --tokenizer " +
                  tokenizer_in(init, "--init") + ")");
  }
  nlohmann::json resume_json;
  if (!resume.empty()) {
    resume_json = read_trainer_json(resume);
    const RunConfig old = checkpoint_config(resume_json, resume + "/trainer.json");
    if (config_to_json(old)["model"] != config_to_json(cfg)["model"])
      throw Error(resume + ": the checkpoint is of another model (" +
                  config_to_json(old)["model"].dump() + ")");
    if (resume_json.value("tokenizer_hash", uint64_t{0}) != train_data.header.tokenizer_hash)
      throw Error(resume + ": the checkpoint was trained with another tokenizer than " +
                  cfg.data.dir);
    if (const std::string done = finished_already(resume, resume_json, tc.steps, opt.stop_at);
        !done.empty()) {
      if (writes) std::printf("%s\n", done.c_str());
      return 0;
    }
  }

  const int threads = configure_threads(tc.threads);
  TrainState st(cfg, mesh);
  if (st.pipeline && !cfg.parallel.layout.pp_trace.empty()) st.pipeline->set_tracing(true);
  int64_t step = 0;
  if (!resume.empty()) {
    const CheckpointState cs = load_checkpoint(resume, st.params, st.optim, mesh.tp, mesh.pp);
    step = cs.step;
    loader.set_position(cs.data_position);
    // A checkpoint of an fp16 run carries its scaler; one trained otherwise starts a fresh one.
    if (st.scaler.enabled() && resume_json.contains("loss_scale"))
      st.scaler.from_json(resume_json["loss_scale"], resume + "/trainer.json");
  }
  if (!init.empty()) load_checkpoint_model(init, st.params, mesh.tp, mesh.pp);
  // The same parameters on every copy of this rank's slice (with servers: every rank, tp = 1).
  check_same_params(st.params, roles.num_servers ? world : mesh.dp);
  const int64_t last = opt.stop_at > 0 ? std::min(opt.stop_at, tc.steps) : tc.steps;
  // ps-async workers are never at the same step: its one checkpoint is written at the end.
  auto is_checkpoint = [&](int64_t s) {
    return s == last || (!async && tc.ckpt_every > 0 && s % tc.ckpt_every == 0);
  };
  // Workers in step with each other stop together on a signal to any rank (with --sync ps the
  // servers pass theirs on). ps-async workers are never in step: there a signal ends the run as
  // before, and it continues from its last checkpoint.
  const bool preemptible = !async;
  std::optional<PreemptionGuard> guard;
  if (preemptible) guard.emplace(writes);
  if (roles.server) {
    const int64_t served = run_parameter_server(
        sc, roles, st.replica,
        {step + 1, last, is_checkpoint, [] { return PreemptionGuard::signal_received(); }});
    if (served < last) return kExitPreempted;  // the workers stopped early, on a signal
    const auto [lo, hi] =
        server_slice(st.params.size(), roles.num_servers, rank - roles.num_workers);
    traffic_summary(world, roles, last - step, {}, hi - lo);
    return 0;
  }
  auto sync = make_synchronizer(sc, roles, st.replica);
  comm::Group& dp = roles.workers;
  comm::Group alone;
  // The report's MFU: every worker measures at once, each its share of the machine (as bench).
  const double gemm_peak =
      opt.report_every > 0 ? roles.all_workers.sum(measure_gemm_peak(st.model.precision())) : 0;
  // Only rank 0 reports and writes.
  std::optional<Progress> progress;
  if (writes) {
    progress.emplace(tc.out_dir, tc.steps, step, tc.log_every);
    write_run_info(cfg, shape, world.size(), threads, step, gemm_peak);
  }
  std::function<void(std::string)> say = [&](const std::string& line) {
    if (progress) progress->message(line);
  };
  char head[320];
  std::snprintf(head, sizeof head,
                "%s %s: %.2fM parameters, %lld train tokens, %d rank(s) x %lld micro-batch(es) x "
                "%lld x %lld, %d thread(s) per rank, --sync %s, mesh dp %d x tp %d x pp %d, %s",
                step ? "resuming" : "training", cfg.model.name.c_str(),
                cfg.model.num_params() / 1e6, static_cast<long long>(train_data.tokens.size()),
                workers, static_cast<long long>(K), static_cast<long long>(B),
                static_cast<long long>(T), threads, sync_name(cfg.parallel.strategy.sync), shape.dp,
                shape.tp, shape.pp, precision_name(cfg.train.precision));
  say(head + (step ? " from step " + std::to_string(step) : std::string()) +
      (init.empty() ? std::string() : ", starting from the weights of " + init));
  if (shape.pp > 1) {  // the pipeline plan, stage by stage
    std::string plan = describe_mesh(cfg.model, shape);
    say("pipeline: " + std::string(schedule_name(cfg.parallel.layout.pp_schedule)) + " schedule, " +
        std::to_string(K) + " micro-batches" +
        (shape.pp_virtual > 1 ? ", " + std::to_string(shape.pp_virtual) + " chunks per rank" : "") +
        "\n" + plan.substr(0, plan.size() - 1));
  }

  // Dynamic balancing: this rank's share of the global batch follows its measured speed; the
  // input buffers hold the largest share once (activations are per micro-batch).
  std::optional<Balancer> balancer;
  if (cfg.parallel.balance.mode == Balance::dynamic && workers > 1)
    balancer.emplace(workers, static_cast<int>(K), cfg.parallel.balance.every,
                     cfg.parallel.balance.cap);
  const int64_t slots = balancer ? balancer->cap() : K;
  std::vector<int32_t> tokens(slots * B * T), targets(slots * B * T);
  auto save = [&](int64_t at, double last_loss) {
    CheckpointState cs;
    cs.step = at;
    cs.data_position = loader.position();
    cs.extra = {{"config", config_to_json(cfg)},
                {"layout",
                 {{"dp", shape.dp},
                  {"tp", shape.tp},
                  {"pp", shape.pp},
                  {"sync", sync_name(cfg.parallel.strategy.sync)}}},
                {"rng", {{"data_seed", tc.seed}, {"data_order", "seeded permutation per epoch"}}},
                {"epoch", loader.epoch()},
                {"loss", last_loss},
                {"tokenizer_hash", train_data.header.tokenizer_hash}};
    if (st.scaler.enabled()) cs.extra["loss_scale"] = st.scaler.to_json();
    cs.copy_files = tokenizer_files(tokenizer_path);
    const std::string dir = (fs::path(tc.out_dir) / ("step-" + std::to_string(at))).string();
    sync->gather_state(st.replica, at);
    // The tensor-parallel ranks of replica 0 gather whole tensors; rank 0 writes them. Under ZeRO
    // every replica takes part: each holds pieces of the optimizer state.
    const bool zero = cfg.parallel.grads.zero > 0;
    if (mesh.coord().dp != 0 && !zero) return;
    if (mesh.tied.size() > 1) {  // the two stages' copies of a tied embedding must be one table
      const uint64_t h = fnv1a64(st.params.data() + st.replica.tied_offset,
                                 static_cast<size_t>(st.replica.tied_numel) * sizeof(float));
      uint64_t both[2];
      mesh.tied.all_gather(&h, both, {1, 1}, DType::U64);
      if (both[0] != both[1])
        throw Error(
            "the first and last pipeline stages hold different copies of the tied "
            "embedding at step " +
            std::to_string(at));
      cs.extra["tied_embedding_copies"] = "identical";
    }
    save_checkpoint(dir, st.params, st.optim, cs, mesh.tp, mesh.pp, writes,
                    zero ? mesh.dp : comm::Group());
    double peak = static_cast<double>(io::take_gather_peak_bytes());  // over the savers
    (zero ? roles.all_workers : mesh.replica)
        .all_reduce(&peak, 1, DType::F64, comm::ReduceOp::Max);
    if (!writes) return;
    write_file_atomically((fs::path(tc.out_dir) / "latest").string(),
                          "step-" + std::to_string(at) + "\n");
    char gathered[128] = "";  // one process writes its tensors as they are: nothing gathered
    if (peak > 0)
      std::snprintf(gathered, sizeof gathered,
                    " (saving gathered at most %.4f MB on a rank (largest tensor %.4f MB))",
                    peak / 1e6, largest_tensor_bytes(cfg.model) / 1e6);
    say("checkpoint " + dir + gathered);
  };

  const int64_t first_step = step + 1;
  int64_t sent0 = world.bytes_sent(), received0 = world.bytes_received();
  // Bytes per mesh axis of the training steps alone (see train/traffic.h).
  const comm::Group* servers = roles.num_servers ? &roles.world : nullptr;
  AxisBytes axes_total;
  StragglerWatch stragglers;
  LinkWatch links(world, cfg.parallel.watch.link_probe_every, first_step, roles.num_servers == 0);
  for (++step; step <= last; ++step) {
    const auto t0 = Clock::now();
    const double waited0 = comm::wait_seconds();
    const AxisBytes axes0 = axis_bytes(mesh, servers);
    int64_t valid = 0;
    const int share = balancer ? balancer->share(dp.rank()) : static_cast<int>(K);
    const int first_micro = balancer ? balancer->first(dp.rank()) : 0;
    for (int k = 0; k < share; ++k) {
      int32_t *in = tokens.data() + k * B * T, *tgt = targets.data() + k * B * T;
      if (balancer)
        loader.global_micro_batch(first_micro + k, B, in, tgt);
      else
        loader.micro_batch(k, B, in, tgt);
      for (int64_t i = 0; i < B * T; ++i) valid += tgt[i] != kernels::kIgnoreIndex;
    }
    // Every rank scales by the global count of targets, so the summed gradients are those of
    // the global mean loss, whatever each rank holds.
    if (sync->global_batch()) valid = dp.sum(valid);
    double loss_sum = st.forward_backward(tokens.data(), targets.data(), share, valid, *sync);
    // The global mean when workers share a batch; otherwise this worker's own.
    if (sync->global_batch()) loss_sum = dp.sum(loss_sum);
    const double loss = valid ? loss_sum / static_cast<double>(valid) : 0.0;
    if (!std::isfinite(loss))
      throw Error("loss became " + std::to_string(loss) + " at step " + std::to_string(step) +
                  "; lower optim.lr or set train.grad_clip");
    const float lr = lr_at(step, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps, tc.steps);
    const double loss_scale = st.scaler.scale();
    // A signal to any rank: every worker agrees to make this step the last.
    int64_t stop_signal = 0;
    if (preemptible) {
      stop_signal = std::max(PreemptionGuard::signal_received(), sync->peer_signal());
      roles.all_workers.all_reduce(&stop_signal, 1, DType::I64, comm::ReduceOp::Max);
      if (step == last) stop_signal = 0;  // the run ends here anyway
      if (stop_signal) sync->set_last_step();
    }
    const SyncStep upd = st.update(*sync, lr, step);
    const AxisBytes axes = axis_bytes(mesh, servers) - axes0;
    axes_total += axes;
    const double norm = upd.grad_norm;
    loader.advance(global);

    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    const double waited = comm::wait_seconds() - waited0;
    const StepTimes times{dt - waited, waited, mesh.pp.rank()};
    nlohmann::json j = {{"step", step},
                        {"loss", loss},
                        {"lr", lr},
                        {"grad_norm", norm},
                        {"tokens_per_s", static_cast<double>(global * T) / dt}};
    j.update(upd.extra);
    if (st.scaler.enabled()) {
      j["loss_scale"] = loss_scale;
      if (upd.skipped) {
        j["skipped"] = true;
        char line[160];
        std::snprintf(line, sizeof line,
                      "step %lld: gradients overflowed fp16 at loss scale %g; step skipped, "
                      "scale now %g",
                      static_cast<long long>(step), loss_scale, st.scaler.scale());
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
    const comm::Traffic mine{static_cast<double>(world.bytes_sent() - sent0),
                             static_cast<double>(world.bytes_received() - received0)};
    sent0 = world.bytes_sent(), received0 = world.bytes_received();
    // Every rank's bytes of this step (the gathering counted in the next one's sent and
    // received); ps-async workers are never in step: only rank 0's own.
    add_step_traffic(j, roles.all_workers, async, world.size() > 1, mine, axes, times);
    for (const std::string& line : stragglers.observe(step, worker_times(j))) say(line);
    if (links.due(step)) {
      for (const std::string& line : links.probe(step)) say(line);
      nlohmann::json rates = nlohmann::json::array();
      for (const LinkRate& l : links.last())
        rates.push_back({{"from", l.from}, {"to", l.to}, {"mb_per_s", l.mb_per_s}});
      j["link_mb_per_s"] = rates;
    }
    if (balancer) {
      j["shares"] = balancer->shares();  // micro-batches per data-parallel rank in this step
      if (balancer->observe(dp, times.compute_s)) {
        std::string line = "step " + std::to_string(step) + ": shares of the next steps";
        for (const int n : balancer->shares()) line += " " + std::to_string(n);
        say(line + " micro-batches (by measured speed)");
      }
    }
    if ((tc.val_every > 0 && step % tc.val_every == 0) || step == tc.steps) {
      comm::Group& eval_group = sync->global_batch() ? dp : alone;
      const int64_t samples = tc.val_batches * global;
      j["val_loss"] =
          st.pipeline ? evaluate(
                            [&](const int32_t* in, const int32_t* tgt) {
                              return st.pipeline->forward_only(st.params, in, tgt);
                            },
                            B, T, val_data.tokens, samples, eval_group)
                            .loss
                      : evaluate(st.model, st.params, val_data.tokens, samples, eval_group).loss;
      char line[128];
      std::snprintf(line, sizeof line, "step %lld: val_loss %.4f", static_cast<long long>(step),
                    j["val_loss"].get<double>());
      say(line);
    }
    if (progress) progress->step(j, global * T);
    if (is_checkpoint(step)) save(step, loss);
    if (writes && opt.report_every > 0 && step % opt.report_every == 0 && step != last)
      refresh_report(tc.out_dir, say);
    if (stop_signal) {
      if (!is_checkpoint(step)) save(step, loss);
      if (writes && opt.report_every > 0) refresh_report(tc.out_dir, say);
      say(std::string("stopped by ") + signal_name(static_cast<int>(stop_signal)) + " after step " +
          std::to_string(step) + " with checkpoint " +
          (fs::path(tc.out_dir) / ("step-" + std::to_string(step))).string() +
          "; continue with --resume auto");
      return kExitPreempted;
    }
  }
  if (st.pipeline && last >= first_step) {  // every stage's peak activation memory
    const PipeStepStats& ps = st.pipeline->last_step();
    const double mine[2] = {double(ps.peak_in_flight), double(ps.peak_activation_bytes)};
    std::vector<double> all(2 * mesh.pp.size());
    mesh.pp.all_gather(mine, all.data(), std::vector<int64_t>(mesh.pp.size(), 2),
                       DType::F64);
    for (int s = 0; s < mesh.pp.size(); ++s) {
      char line[160];
      std::snprintf(line, sizeof line,
                    "stage %d: at most %d micro-batch chunks in flight, peak activations %.2f MB",
                    s, static_cast<int>(all[2 * s]), all[2 * s + 1] / 1e6);
      say(line);
    }
  }
  if (st.pipeline && !cfg.parallel.layout.pp_trace.empty()) {
    write_pipeline_trace(*st.pipeline, mesh.pp, writes, cfg.parallel.layout.pp_trace);
    say("pipeline timeline " + cfg.parallel.layout.pp_trace);
  }
  const nlohmann::json memory = memory_summary(st, *sync, roles.all_workers);
  if (cfg.parallel.grads.zero > 0 && last >= first_step) {
    double opt = 0, most = 0;
    for (const auto& r : memory) {
      opt += r["optimizer_state"].get<double>();
      most = std::max(most, r["optimizer_state"].get<double>());
    }
    char line[200];
    std::snprintf(line, sizeof line,
                  "ZeRO-%d: optimizer state %.3f MB on the largest rank; all %d ranks together "
                  "hold %.3f MB, one copy (without ZeRO, %d copies)",
                  cfg.parallel.grads.zero, most / 1e6, static_cast<int>(memory.size()), opt / 1e6,
                  shape.dp);
    say(line);
  }
  const nlohmann::json traffic =
      traffic_summary(world, roles, last - first_step + 1, axes_total, st.params.size());
  if (writes && last >= first_step) {
    if (world.size() > 1)
      for (const auto& r : traffic) say(describe_rank_traffic(r));
    write_file_atomically((fs::path(tc.out_dir) / "summary.json").string(),
                          nlohmann::json{{"sync", sync_name(cfg.parallel.strategy.sync)},
                                         {"zero", cfg.parallel.grads.zero},
                                         {"steps", last - first_step + 1},
                                         {"ranks", traffic},
                                         {"memory", memory},
                                         {"stragglers", stragglers.report()},
                                         {"network_stragglers", links.report()}}
                                  .dump(1) +
                              "\n");
  }
  if (writes && opt.report_every > 0) refresh_report(tc.out_dir, say);
  return 0;
}

}  // namespace parallama
