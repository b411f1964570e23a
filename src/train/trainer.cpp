#include "train/trainer.h"

#include "train/trainer_run.h"

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
#include "train/compress_state.h"
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
#include "train/worker_state.h"

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

// Where train.ckpt_async copies a checkpoint first: /dev/shm (memory) when it has room for twice
// the model's parameters and two optimizer states, else the run directory (then the copy is a
// write to the page cache, and the thread flushes it).
std::string checkpoint_stage(const RunConfig& cfg) {
  const double bytes = 3.0 * sizeof(float) * static_cast<double>(cfg.model.num_params());
  std::error_code ec;
  const fs::space_info room = fs::space("/dev/shm", ec);
  if (!ec && fs::is_directory("/dev/shm", ec) && static_cast<double>(room.available) > 2 * bytes)
    return "/dev/shm";
  std::printf("train.ckpt_async: /dev/shm has no room for %.1f MB; checkpoints are staged in %s\n",
              2 * bytes / 1e6, cfg.train.out_dir.c_str());
  return cfg.train.out_dir;
}

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
  return Trainer(cfg, opt, std::move(world)).run();
}

Trainer::~Trainer() {
  if (saving_.thread.joinable()) saving_.thread.join();  // its failure is lost with the run's
}

Trainer::Trainer(const RunConfig& cfg, const TrainOptions& opt, comm::Group world)
    : cfg_(cfg), opt_(opt), world_(std::move(world)) {}

int Trainer::run() {
  set_up();
  if (!claim()) return 0;
  build();
  if (roles_.server) return serve();
  announce();
  watch_.sent0 = world_.bytes_sent(), watch_.received0 = world_.bytes_received();
  watch_.links.emplace(world_, cfg_.parallel.watch.link_probe_every, run_.first_step,
                       roles_.num_servers == 0);
  for (int64_t at = run_.first_step; at <= run_.last; ++at) {
    const int64_t stop_signal = step(at);
    run_.step = at;
    if (stop_signal) {
      if (!is_checkpoint(at)) checkpoint(at, run_.loss);
      wait_for_checkpoint();  // on disk before the process ends
      if (run_.writes && opt_.report_every > 0) report();
      say(std::string("stopped by ") + signal_name(static_cast<int>(stop_signal)) + " after step " +
          std::to_string(at) + " with checkpoint " +
          (fs::path(cfg_.train.out_dir) / ("step-" + std::to_string(at))).string() +
          "; continue with --resume auto");
      return kExitPreempted;
    }
  }
  finish();
  return 0;
}

void Trainer::set_up() {
  const TrainConfig& tc = cfg_.train;
  cfg_.check_processes(world_.size());
  sc_ = sync_config(cfg_);
  roles_ = make_roles(world_, sc_);
  // The workers form the dp × tp × pp mesh; each parameter server stands alone.
  shape_ = roles_.server ? MeshShape{} : mesh_shape(cfg_);
  if (!roles_.server && shape_.pp > 1 && shape_.pp_balance == PpBalance::measure &&
      shape_.pp_layers.empty())
    shape_.measured = measure_stage_costs(cfg_, roles_.all_workers);
  mesh_.emplace(roles_.server ? comm::Group() : roles_.all_workers, shape_, cfg_.model);
  if (!roles_.server) roles_.workers = mesh_->dp;
  run_.writes = world_.rank() == 0;
  run_.async = cfg_.parallel.strategy.sync == Sync::ps_async;
  // Everything a user could get wrong is checked before the model is built.
  data_.train = load_split(cfg_.data.dir, "train.bin", cfg_.model);
  data_.val = load_split(cfg_.data.dir, "val.bin", cfg_.model);
  if (data_.train.header.tokenizer_hash != data_.val.header.tokenizer_hash)
    throw Error(cfg_.data.dir + ": train.bin and val.bin were made with different tokenizers");
  data_.tokenizer = tokenizer_in(cfg_.data.dir, "--data.dir");
  check_tokenizer_hash(data_.tokenizer, data_.train.header.tokenizer_hash, data_.train.path);
  const int64_t T = tc.seq_len;
  loader_.emplace(data_.train.tokens, T, tc.seed, mesh_->coord().dp, shape_.dp);
  const int64_t global = global_batch();
  if (global > loader_->num_samples())
    throw Error("a global batch of " + std::to_string(global) +
                " sequences (batch_size × micro_batches) " + "is larger than the " +
                std::to_string(loader_->num_samples()) + " sequences of " + std::to_string(T + 1) +
                " tokens in " + data_.train.path);
  if (static_cast<int64_t>(data_.val.tokens.size()) <= T)
    throw Error(data_.val.path + ": fewer than " + std::to_string(T + 1) +
                " tokens for validation");
  check_memory(cfg_);
}

bool Trainer::claim() {
  const TrainConfig& tc = cfg_.train;
  // The run directory: rank 0 locks it (for the whole run), finds the checkpoint to resume, or
  // makes sure a fresh start replaces nobody's checkpoints, and sweeps what interrupted saves
  // left; every rank gets the same answer or the same error.
  std::string& resume = start_.resume;
  {
    std::exception_ptr error;
    if (world_.rank() == 0)
      io::guarded(error, [&] {
        start_.lock.emplace(tc.out_dir);
        resume = resolve_resume(opt_.resume, tc.out_dir);
        if (resume.empty()) {
          const std::string removed = claim_for_fresh_start(tc.out_dir, opt_.force);
          if (!removed.empty()) std::printf("--force: deleted %s\n", removed.c_str());
        }
        if (const int n = sweep_stale_checkpoint_dirs(tc.out_dir))
          std::printf("removed %d unfinished checkpoint director%s of an interrupted run\n", n,
                      n == 1 ? "y" : "ies");
      });
    io::agree_on_failure(world_, error);
    int64_t len = static_cast<int64_t>(resume.size());
    world_.broadcast(&len, 1, 0, DType::I64);
    resume.resize(static_cast<size_t>(len));
    if (len > 0) world_.broadcast(resume.data(), len, 0, DType::U8);
  }
  const uint64_t data_hash = data_.train.header.tokenizer_hash;
  // Fine-tuning starts from another checkpoint's weights: the same model and tokenizer.
  start_.init = resume.empty() ? opt_.init : std::string();
  const std::string& init = start_.init;
  if (!init.empty()) {
    const nlohmann::json init_json = read_trainer_json(init);
    const RunConfig base = checkpoint_config(init_json, init + "/trainer.json");
    if (config_to_json(base)["model"] != config_to_json(cfg_)["model"])
      throw Error("--init " + init + ": the checkpoint is of another model (" +
                  config_to_json(base)["model"].dump() + "); use its [model] settings");
    if (init_json["tokenizer_hash"].get<uint64_t>() != data_hash)
      throw Error("--init " + init + ": the checkpoint's tokenizer is not the one " +
                  cfg_.data.dir + " was made with (prepare the data with --tokenizer " +
                  tokenizer_in(init, "--init") + ")");
  }
  if (resume.empty()) return true;
  start_.resume_json = read_trainer_json(resume);
  const RunConfig old = checkpoint_config(start_.resume_json, resume + "/trainer.json");
  if (config_to_json(old)["model"] != config_to_json(cfg_)["model"])
    throw Error(resume + ": the checkpoint is of another model (" +
                config_to_json(old)["model"].dump() + ")");
  if (start_.resume_json.value("tokenizer_hash", uint64_t{0}) != data_hash)
    throw Error(resume + ": the checkpoint was trained with another tokenizer than " +
                cfg_.data.dir);
  const std::string done = finished_already(resume, start_.resume_json, tc.steps, opt_.stop_at);
  if (done.empty()) return true;
  if (run_.writes) std::printf("%s\n", done.c_str());
  return false;
}

void Trainer::build() {
  const TrainConfig& tc = cfg_.train;
  run_.threads = configure_threads(tc.threads);
  if (tc.ckpt_async && run_.writes) saving_.stage_root = checkpoint_stage(cfg_);
  st_.emplace(cfg_, *mesh_);
  if (st_->pipeline && !cfg_.parallel.layout.pp_trace.empty()) st_->pipeline->set_tracing(true);
  const std::string &resume = start_.resume, &init = start_.init;
  if (!resume.empty()) {
    const CheckpointState cs =
        load_checkpoint(resume, st_->params, st_->optim, mesh_->tp, mesh_->pp);
    run_.step = cs.step;
    loader_->set_position(cs.data_position);
    // A checkpoint of an fp16 run carries its scaler; one trained otherwise starts a fresh one.
    if (st_->scaler.enabled() && start_.resume_json.contains("loss_scale"))
      st_->scaler.from_json(start_.resume_json["loss_scale"], resume + "/trainer.json");
  }
  if (!init.empty()) load_checkpoint_model(init, st_->params, mesh_->tp, mesh_->pp);
  // The same parameters on every copy of this rank's slice (with servers: every rank, tp = 1).
  check_same_params(st_->params, roles_.num_servers ? world_ : mesh_->dp);
  run_.last = opt_.stop_at > 0 ? std::min(opt_.stop_at, tc.steps) : tc.steps;
  run_.first_step = run_.step + 1;
  // Workers in step with each other stop together on a signal to any rank (with --sync ps the
  // servers pass theirs on). ps-async workers are never in step: there a signal ends the run as
  // before, and it continues from its last checkpoint.
  run_.preemptible = !run_.async;
  if (run_.preemptible) guard_.emplace(run_.writes);
  if (!roles_.server) sync_ = make_synchronizer(sc_, roles_, st_->replica);
  // What else the run keeps continues from the checkpoint: compression's state (error feedback's
  // residuals, PowerSGD's Q), or under local and diloco the workers' own.
  if (sync_ && !resume.empty() && (sync_->reducer() || sync_->worker_state())) {
    std::string line;
    std::exception_ptr error;
    io::guarded(error, [&] {
      if (GradReducer* red = sync_->reducer())
        line = load_compress_state(*red, st_->params.layout(), resume, *mesh_);
      else if (mesh_->dp.size() > 1)
        line = load_worker_state(*sync_->worker_state(), st_->replica, resume, *mesh_);
    });
    io::agree_on_failure(mesh_->tp, mesh_->pp, mesh_->dp, error);
    if (!line.empty() && run_.writes) std::printf("%s\n", line.c_str());
  }
}

int Trainer::serve() {
  const int64_t served = run_parameter_server(
      sc_, roles_, st_->replica,
      {run_.first_step, run_.last, [this](int64_t s) { return is_checkpoint(s); },
       [] { return PreemptionGuard::signal_received(); }});
  if (served < run_.last) return kExitPreempted;  // the workers stopped early, on a signal
  const auto [lo, hi] =
      server_slice(st_->params.size(), roles_.num_servers, world_.rank() - roles_.num_workers);
  traffic_summary(world_, roles_, run_.last - run_.step, {}, hi - lo);
  return 0;
}

void Trainer::announce() {
  const TrainConfig& tc = cfg_.train;
  const int64_t B = tc.batch_size, T = tc.seq_len, K = tc.micro_batches;
  // The report's MFU: every worker measures at once, each its share of the machine (as bench).
  const double gemm_peak =
      opt_.report_every > 0 ? roles_.all_workers.sum(measure_gemm_peak(st_->model.precision())) : 0;
  // Only rank 0 reports and writes.
  if (run_.writes) {
    progress_.emplace(tc.out_dir, tc.steps, run_.step, tc.log_every);
    write_run_info(cfg_, shape_, world_.size(), run_.threads, run_.step, gemm_peak);
  }
  char head[320];
  std::snprintf(head, sizeof head,
                "%s %s: %.2fM parameters, %lld train tokens, %d rank(s) x %lld micro-batch(es) x "
                "%lld x %lld, %d thread(s) per rank, --sync %s, mesh dp %d x tp %d x pp %d, %s",
                run_.step ? "resuming" : "training", cfg_.model.name.c_str(),
                cfg_.model.num_params() / 1e6, static_cast<long long>(data_.train.tokens.size()),
                shape_.dp, static_cast<long long>(K), static_cast<long long>(B),
                static_cast<long long>(T), run_.threads, sync_name(cfg_.parallel.strategy.sync),
                shape_.dp, shape_.tp, shape_.pp, precision_name(tc.precision));
  say(head + (run_.step ? " from step " + std::to_string(run_.step) : std::string()) +
      (start_.init.empty() ? std::string() : ", starting from the weights of " + start_.init));
  if (shape_.pp > 1) {  // the pipeline plan, stage by stage
    std::string plan = describe_mesh(cfg_.model, shape_);
    say("pipeline: " + std::string(schedule_name(cfg_.parallel.layout.pp_schedule)) +
        " schedule, " + std::to_string(K) + " micro-batches" +
        (shape_.pp_virtual > 1 ? ", " + std::to_string(shape_.pp_virtual) + " chunks per rank"
                               : "") +
        "\n" + plan.substr(0, plan.size() - 1));
  }
  // Dynamic balancing: this rank's share of the global batch follows its measured speed; the
  // input buffers hold the largest share once (activations are per micro-batch).
  if (cfg_.parallel.balance.mode == Balance::dynamic && shape_.dp > 1)
    balancer_.emplace(shape_.dp, static_cast<int>(K), cfg_.parallel.balance.every,
                      cfg_.parallel.balance.cap);
  const int64_t slots = balancer_ ? balancer_->cap() : K;
  tokens_.resize(static_cast<size_t>(slots * B * T));
  targets_.resize(static_cast<size_t>(slots * B * T));
}

int64_t Trainer::global_batch() const {
  return cfg_.train.batch_size * cfg_.train.micro_batches * shape_.dp;
}

bool Trainer::is_checkpoint(int64_t at) const {
  // ps-async workers are never at the same step: its one checkpoint is written at the end.
  return at == run_.last ||
         (!run_.async && cfg_.train.ckpt_every > 0 && at % cfg_.train.ckpt_every == 0);
}

void Trainer::say(const std::string& line) {
  if (progress_) progress_->message(line);
}

}  // namespace parallama
