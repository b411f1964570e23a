// `parallama bench`: training steps on random tokens; median step time, tokens/s, GFLOP/s and
// MFU against the GEMM peak of oneDNN measured on this machine with the same threads, in the
// precision of the run (fp32, bf16 or fp16).
// Under mpirun with --dp N: per-rank and global tokens/s, scaling efficiency against the same
// ranks computing alone, and the gradient communication time and the share of it hidden
// behind backward. On any layout: every rank's bytes per step on each mesh axis (dp, tp, pp,
// other; see train/traffic.h).
#include "train/bench.h"

#include <sys/resource.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "parallel/mesh.h"
#include "parallel/sync.h"
#include "plan/gemm_peak.h"
#include "plan/plan.h"
#include "tensor/arena.h"
#include "tensor/error.h"
#include "tensor/profile.h"
#include "train/auto_run.h"
#include "train/stage_time.h"
#include "train/step.h"
#include "train/traffic.h"

namespace parallama {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<double> gather(comm::Group& g, double x) {
  std::vector<double> all(g.size());
  g.all_gather(&x, all.data(), std::vector<int64_t>(g.size(), 1), DType::F64);
  return all;
}

// Minor page faults of this process so far.
double minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_minflt);
}

// Seconds per step by kernel kind and by model part (each summing to the step), and the share of
// the step in each (part, kind) cell; rank 0's, printed, and every rank's in the JSON.
nlohmann::json print_profile(const prof::Report& r, int steps, comm::Group& world) {
  using prof::Kind, prof::Part;
  const int nk = static_cast<int>(Kind::count), np = static_cast<int>(Part::count);
  const double wall = r.wall_s > 0 ? r.wall_s : 1.0;
  nlohmann::json j;
  j["step_s"] = r.wall_s / steps;
  for (int k = 0; k < nk; ++k) {
    j["kind_s"][prof::kind_name(Kind(k))] = r.kind_s[k] / steps;
    j["calls"][prof::kind_name(Kind(k))] = static_cast<double>(r.calls[k]) / steps;
  }
  for (int p = 0; p < np; ++p) {
    j["part_s"][prof::part_name(Part(p))] = r.part_s[p] / steps;
    for (int k = 0; k < nk; ++k)
      if (r.cell_s[p][k] > 0)
        j["cell_s"][prof::part_name(Part(p))][prof::kind_name(Kind(k))] = r.cell_s[p][k] / steps;
  }
  std::vector<double> all(world.size());
  const double mine = r.wall_s / steps;
  world.all_gather(&mine, all.data(), std::vector<int64_t>(world.size(), 1), DType::F64);
  j["step_s_per_rank"] = all;
  if (world.rank() != 0) return j;
  std::printf("profile of rank 0, per timed step (%.4f s; each table sums to it):\n",
              r.wall_s / steps);
  std::printf("  %-14s %9s %7s %8s\n", "kernel kind", "s/step", "share", "calls");
  for (int k = 0; k < nk; ++k)
    if (r.kind_s[k] > 0)
      std::printf("  %-14s %9.4f %6.1f%% %8.0f\n", prof::kind_name(Kind(k)), r.kind_s[k] / steps,
                  100 * r.kind_s[k] / wall, double(r.calls[k]) / steps);
  std::printf("  %-14s %9s %7s\n", "model part", "s/step", "share");
  for (int p = 0; p < np; ++p)
    if (r.part_s[p] > 0)
      std::printf("  %-14s %9.4f %6.1f%%\n", prof::part_name(Part(p)), r.part_s[p] / steps,
                  100 * r.part_s[p] / wall);
  // Part x kind, % of the step, only the kinds that appear.
  static const char* kShort[] = {"gemm",   "gemm_lp", "convert", "attn",  "rmsnorm", "rope",
                                 "swiglu", "xent",    "embed",   "optim", "comm",    "other"};
  static_assert(sizeof kShort / sizeof *kShort == static_cast<size_t>(Kind::count));
  std::printf("  %% of step    ");
  for (int k = 0; k < nk; ++k)
    if (r.kind_s[k] > 0) std::printf(" %8s", kShort[k]);
  std::printf("\n");
  for (int p = 0; p < np; ++p) {
    if (r.part_s[p] <= 0) continue;
    std::printf("  %-13s", prof::part_name(Part(p)));
    for (int k = 0; k < nk; ++k)
      if (r.kind_s[k] > 0) std::printf(" %8.1f", 100 * r.cell_s[p][k] / wall);
    std::printf("\n");
  }
  return j;
}

// What the timed steps measured, per step (medians are taken when reported).
struct Measured {
  std::vector<double> times, comm, exposed, tp_comm, tp_exposed, bubble, faults;
  std::vector<double> alone;  // data parallelism: each rank's step computing alone
  float loss = 0.0f;
  double residual_norm = -1;  // error feedback's after the last step (rank 0's), if any
  AxisBytes axes;             // bytes per step by mesh axis
  prof::Report report;
};

// The bench's parts of a run: its mesh, model and synchronizer, and one step's random batch.
struct Bench {
  const RunConfig& cfg;
  comm::Group& world;
  MeshShape shape;
  Mesh& mesh;
  TrainState& st;
  SyncConfig sc;
  Synchronizer& sync;
  std::vector<int32_t> tokens, targets;
};

// Phase 1 (data parallelism only): every rank computes alone, no communication, all at once.
void time_alone(Bench& b, Measured& m) {
  const RunConfig& cfg = b.cfg;
  const int K = cfg.train.micro_batches;
  const int64_t BT = cfg.train.batch_size * cfg.train.seq_len;
  if (b.shape.dp <= 1 || b.shape.tp != 1 || cfg.parallel.grads.zero != 0)
    return;           // ZeRO shares its optimizer
  Roles alone_roles;  // size-1 groups: no communication
  auto own = make_synchronizer(b.sc, alone_roles, b.st.replica);
  b.world.barrier();
  for (int s = 0; s < cfg.bench.warmup + cfg.bench.steps; ++s) {
    const auto t0 = Clock::now();
    b.st.forward_backward(b.tokens.data(), b.targets.data(), K, K * BT, *own, s + 1);
    b.st.update(*own, cfg.optim.lr, s + 1);
    if (s >= cfg.bench.warmup) m.alone.push_back(seconds_since(t0));
  }
}

// Phase 2: the parallel steps: bucketed, overlapped gradient all-reduce over the replicas,
// tensor-parallel collectives inside the model.
void time_steps(Bench& b, Measured& m, bool profile) {
  const RunConfig& cfg = b.cfg;
  TrainState& st = b.st;
  const int K = cfg.train.micro_batches;
  const int64_t BT = cfg.train.batch_size * cfg.train.seq_len;
  const int64_t valid = K * BT * b.shape.dp;
  AxisBytes axes0;
  b.world.barrier();
  for (int s = 0; s < cfg.bench.warmup + cfg.bench.steps; ++s) {
    if (s == cfg.bench.warmup) {
      axes0 = axis_bytes(b.mesh);
      prof::enable(profile);  // the timed steps only
      prof::reset();
    }
    const double faults0 = minor_faults();
    const auto t0 = Clock::now();
    st.model.reset_tp_stats();
    double loss_sum =
        st.forward_backward(b.tokens.data(), b.targets.data(), K, valid, b.sync, s + 1);
    m.loss = static_cast<float>(loss_sum / static_cast<double>(K * BT));
    std::optional<prof::PartScope> part(prof::Part::optimizer);
    const SyncStep upd = st.update(b.sync, cfg.optim.lr, s + 1);
    part.reset();
    if (s < cfg.bench.warmup) continue;
    m.times.push_back(seconds_since(t0));
    m.faults.push_back(minor_faults() - faults0);
    m.comm.push_back(upd.extra.value("comm_s", 0.0));
    m.exposed.push_back(upd.extra.value("comm_exposed_s", 0.0));
    m.residual_norm = upd.extra.value("residual_norm", -1.0);
    m.tp_comm.push_back(st.model.tp_stats().comm_s);
    if (st.pipeline) {
      const PipeStepStats& ps = st.pipeline->last_step();
      m.bubble.push_back(ps.step_s > 0 ? 1.0 - ps.busy_s / ps.step_s : 0.0);
    }
    m.tp_exposed.push_back(st.model.tp_stats().exposed_s);
  }
  m.report = prof::report();
  prof::enable(false);
  m.axes = (axis_bytes(b.mesh) - axes0) / cfg.bench.steps;
}

// Memory per rank, page faults and bytes per step by mesh axis: printed, and into j.
void report_memory_and_traffic(Bench& b, const Measured& m, nlohmann::json& j) {
  TrainState& st = b.st;
  comm::Group& world_group = b.world;
  // Memory per rank, in bytes: what this rank holds of the model and its training state.
  // Measured after the last step: gradients are the gradient buffer's pages in memory (ZeRO-2
  // hands them back after the reduce-scatter) plus the kept shard; optimizer state is what this
  // rank holds (ZeRO: its pieces).
  const double floats = static_cast<double>(st.params.size()) * sizeof(float);
  const std::vector<double> mem = {
      floats, static_cast<double>(st.grads.resident_bytes() + b.sync.gradient_shard_bytes()),
      static_cast<double>(st.optim.state_bytes()),
      static_cast<double>(st.model.activation_bytes())};
  const char* mem_names[] = {"parameters", "gradients", "optimizer_state", "activations"};
  std::printf("bytes per rank:");
  for (size_t i = 0; i < mem.size(); ++i) {
    const auto all = gather(world_group, mem[i]);
    std::printf(" %s %.1f MB%s", mem_names[i], *std::max_element(all.begin(), all.end()) / 1e6,
                i + 1 < mem.size() ? "," : " (largest rank)\n");
    j["bytes_per_rank"][mem_names[i]] = all;
  }
  // Pages the kernel had to map (and zero) during the median timed step: memory given back and
  // taken again. The median step, like the time: a heap that grows once under a late peak of
  // in-flight buckets faults in one step; memory given back and taken again faults in every step.
  const auto all_faults = gather(world_group, median(m.faults));
  std::printf("page faults per step: %.0f (median step, most of any rank)\n",
              *std::max_element(all_faults.begin(), all_faults.end()));
  j["page_faults_per_step"] = all_faults;
  // Traffic per step by mesh axis, sent + received, every rank.
  const auto axis_values = m.axes.values();
  std::printf("bytes per step by axis (sent + received, MB):\n  %-5s", "");
  for (int r = 0; r < world_group.size(); ++r)
    std::printf(" %10s", ("rank " + std::to_string(r)).c_str());
  for (size_t a = 0; a < axis_values.size(); ++a) {
    const auto all = gather(world_group, axis_values[a]);
    std::printf("\n  %-5s", kAxes[a]);
    for (double x : all) std::printf(" %10.3f", x / 1e6);
    j["bytes_per_step"][kAxes[a]] = all;
  }
  std::printf("\n");
}

// Data parallelism: each rank's tokens/s (and alone), scaling efficiency, the gradient sum's
// time and the share hidden behind backward.
void report_dp(Bench& b, const Measured& m, double tokens_per_s, nlohmann::json& j) {
  const RunConfig& cfg = b.cfg;
  comm::Group& world_group = b.world;
  const int world = world_group.size(), replicas = b.shape.dp;
  const double tokens =
      static_cast<double>(cfg.train.micro_batches * cfg.train.batch_size * cfg.train.seq_len);
  const auto per_rank = gather(b.mesh.dp, tokens / median(m.times));
  const double c = world_group.sum(median(m.comm)) / world;
  const double e = world_group.sum(median(m.exposed)) / world;
  const double hidden = c > 0 ? std::clamp(1.0 - e / c, 0.0, 1.0) : 0.0;
  if (!m.alone.empty()) {
    const auto alone_rate = gather(b.mesh.dp, tokens / median(m.alone));
    double alone_total = 0;
    for (double r : alone_rate) alone_total += r;
    for (int r = 0; r < replicas; ++r)
      std::printf("rank %d: %.0f tokens/s (alone %.0f)\n", r, per_rank[r], alone_rate[r]);
    std::printf(
        "scaling efficiency %.1f%% (global tokens/s over the sum of the ranks computing "
        "alone)\n",
        100.0 * tokens_per_s / alone_total);
    j["alone_tokens_per_s"] = alone_rate;
    j["scaling_efficiency"] = tokens_per_s / alone_total;
  }
  std::printf("gradient %s%s: %.4f s per step, %.4f s exposed, %.0f%% hidden behind backward\n",
              cfg.parallel.grads.zero ? "reduce-scatter (ZeRO)" : "all-reduce",
              cfg.parallel.grads.compress == Compress::none
                  ? ""
                  : (std::string(" in ") + compress_name(cfg.parallel.grads.compress)).c_str(),
              c, e, 100.0 * hidden);
  j["compress"] = compression_summary(cfg.parallel);
  if (m.residual_norm >= 0) j["compress"]["residual_norm"] = m.residual_norm;
  j["per_rank_tokens_per_s"] = per_rank;
  j["comm_s"] = c;
  j["comm_exposed_s"] = e;
  j["comm_hidden_fraction"] = hidden;
}

// Tensor parallelism's all-reduces, and the pipeline's bubble against its formula.
void report_tp_pp(Bench& b, const Measured& m, nlohmann::json& j) {
  const RunConfig& cfg = b.cfg;
  comm::Group& world_group = b.world;
  const int world = world_group.size(), K = cfg.train.micro_batches;
  if (b.shape.tp > 1) {
    const double c = world_group.sum(median(m.tp_comm)) / world;
    const double e = world_group.sum(median(m.tp_exposed)) / world;
    const double hidden = c > 0 ? std::clamp(1.0 - e / c, 0.0, 1.0) : 0.0;
    std::printf(
        "tensor-parallel all-reduces: %.4f s per step, %.4f s exposed, %.0f%% hidden (the "
        "backward input-gradient sums behind the weight-gradient GEMMs; the forward sums cannot "
        "hide)\n",
        c, e, 100.0 * hidden);
    j["tp_comm_s"] = c;
    j["tp_comm_exposed_s"] = e;
    j["tp_comm_hidden_fraction"] = hidden;
  }
  if (!b.st.pipeline) return;
  // The idle share of each stage's step, against the schedule's formula.
  const auto stage_bubble = gather(b.mesh.pp, median(m.bubble));
  double mean = 0;
  for (double x : stage_bubble) mean += x / static_cast<double>(stage_bubble.size());
  const int v = cfg.parallel.layout.pp_virtual;
  const double formula = pipeline_bubble(b.shape.pp, v, K);
  const auto stage_peak = gather(b.mesh.pp, double(b.st.pipeline->last_step().peak_in_flight));
  std::printf(
      "pipeline %s, %d stages, %d micro-batches%s: bubble %.1f%% measured (mean over "
      "stages), %.1f%% by (p-1)/(v*m+p-1); stage 0 holds %d micro-batches at most\n",
      schedule_name(cfg.parallel.layout.pp_schedule), b.shape.pp, K,
      v > 1 ? (", " + std::to_string(v) + " chunks per rank").c_str() : "", 100 * mean,
      100 * formula, static_cast<int>(stage_peak[0]));
  j["pp_schedule"] = schedule_name(cfg.parallel.layout.pp_schedule);
  j["pp_virtual"] = cfg.parallel.layout.pp_virtual;
  j["micro_batches"] = K;
  j["pp_bubble_per_stage"] = stage_bubble;
  j["pp_bubble"] = mean;
  j["pp_bubble_formula"] = formula;
  j["pp_peak_micro_batches_per_stage"] = stage_peak;
}

// The headline: model and layout, step time, throughput and MFU; the JSON's first fields.
nlohmann::json report_speed(Bench& b, const Measured& m, int threads, double* tokens_per_s) {
  const RunConfig& cfg = b.cfg;
  const LlamaConfig& mc = cfg.model;
  comm::Group& world_group = b.world;
  const int world = world_group.size();
  const int64_t B = cfg.train.batch_size, T = cfg.train.seq_len, K = cfg.train.micro_batches;
  const auto medians = gather(world_group, median(m.times));
  const double step_s = *std::max_element(medians.begin(), medians.end());  // the slowest's pace
  // All ranks measure at once: the machine's share.
  const Precision precision = b.st.model.precision();
  const double peak = world_group.sum(measure_gemm_peak(precision));
  const double flops_per_token = model_flops_per_token(mc, T);
  const double tokens = static_cast<double>(b.shape.dp * K * B * T);
  *tokens_per_s = tokens / step_s;
  const double gflops = flops_per_token * tokens / step_s / 1e9;
  const char* formula = "6*N + 12*L*T*C per token (N = matmul parameters incl. output head)";
  std::printf(
      "model %s: %.2fM parameters (%.2fM in matmuls), %d rank(s) (dp %d x tp %d x pp %d) x batch "
      "%lld x %lld, %d thread(s) per rank\n",
      mc.name.c_str(), mc.num_params() / 1e6, mc.num_matmul_params() / 1e6, world, b.shape.dp,
      b.shape.tp, b.shape.pp, static_cast<long long>(B), static_cast<long long>(T), threads);
  if (b.shape.pp > 1) {  // the split this run used (measured on this machine with pp_balance)
    const std::string mesh_text = describe_mesh(mc, b.shape);
    const size_t at = mesh_text.find("pipeline plan");
    if (at != std::string::npos)
      std::printf("%s\n", mesh_text.substr(at, mesh_text.find('\n', at) - at).c_str());
  }
  std::printf("step: median %.4f s (min %.4f, max %.4f, %d steps after %d warm-up), loss %.4f\n",
              step_s, *std::min_element(m.times.begin(), m.times.end()),
              *std::max_element(m.times.begin(), m.times.end()), cfg.bench.steps, cfg.bench.warmup,
              m.loss);
  std::printf("throughput: %.0f tokens/s, %.1f GFLOP/s [%s]\n", *tokens_per_s, gflops, formula);
  std::printf(
      "MFU: %.1f%% of the measured oneDNN %s GEMM peak %.1f GFLOP/s (%d rank(s) x %d "
      "thread(s))\n",
      100.0 * gflops / peak, precision_name(precision), peak, world, threads);
  return {{"framework", "parallama"},
          {"model", mc.name},
          {"params", mc.num_params()},
          {"matmul_params", mc.num_matmul_params()},
          {"batch_size", B},
          {"seq_len", T},
          {"threads", threads},
          {"ranks", world},
          {"dp", b.shape.dp},
          {"tp", b.shape.tp},
          {"pp", b.shape.pp},
          {"zero", cfg.parallel.grads.zero},
          {"steps", cfg.bench.steps},
          {"warmup", cfg.bench.warmup},
          {"median_step_s", step_s},
          {"tokens_per_s", *tokens_per_s},
          {"gflops", gflops},
          {"flop_formula", formula},
          {"precision", precision_name(precision)},
          {"peak_gflops", peak},
          {"mfu", gflops / peak},
          {"loss", m.loss},
          {"activation_bytes", b.st.model.activation_bytes()}};
}

}  // namespace

int run_bench(const RunConfig& cfg, bool json, comm::Group world_group, bool profile,
              const std::optional<Device>& device) {
  if (cfg.parallel.servers()) throw Error("bench measures --sync allreduce only");
  cfg.check_processes(world_group.size());
  MeshShape shape = mesh_shape(cfg);
  if (shape.pp > 1 && shape.pp_balance == PpBalance::measure && shape.pp_layers.empty())
    shape.measured = measure_stage_costs(cfg, world_group);
  Mesh mesh(world_group, shape, cfg.model);
  const int threads = configure_threads(cfg.train.threads);
  const int64_t B = cfg.train.batch_size, T = cfg.train.seq_len, V = cfg.model.vocab_size;
  TrainState st(cfg, mesh);
  const SyncConfig sc = sync_config(cfg);
  Roles roles;
  roles.world = roles.all_workers = world_group;
  roles.workers = mesh.dp;
  roles.num_workers = world_group.size();
  auto sync = make_synchronizer(sc, roles, st.replica);
  // Every replica draws its own batch; the tensor-parallel ranks of a replica share it. One
  // step: micro_batches micro-batches of (B, T) (through the pipeline when --pp > 1).
  std::mt19937_64 rng(cfg.train.seed + static_cast<uint64_t>(mesh.coord().dp));
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V - 1));
  const int K = cfg.train.micro_batches;
  Bench b{cfg,
          world_group,
          shape,
          mesh,
          st,
          sc,
          *sync,
          std::vector<int32_t>(K * B * T),
          std::vector<int32_t>(K * B * T)};
  for (auto& x : b.tokens) x = tok(rng);
  for (auto& x : b.targets) x = tok(rng);
  Measured m;
  time_alone(b, m);
  time_steps(b, m, profile);
  double tokens_per_s = 0;
  nlohmann::json j = report_speed(b, m, threads, &tokens_per_s);
  report_memory_and_traffic(b, m, j);
  {  // the planner's prediction against what was measured
    std::vector<double> memory(static_cast<size_t>(world_group.size()), 0.0);
    for (const char* k : {"parameters", "gradients", "optimizer_state", "activations"})
      for (size_t r = 0; r < memory.size(); ++r)
        memory[r] += j["bytes_per_rank"][k][r].get<double>();
    std::string line;
    j["prediction"] = prediction_json(cfg, device, median(m.times), memory, &line);
    std::printf("%s\n", line.c_str());
  }
  if (shape.dp > 1) report_dp(b, m, tokens_per_s, j);
  report_tp_pp(b, m, j);
  if (profile) j["profile"] = print_profile(m.report, cfg.bench.steps, world_group);
  if (json) std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace parallama
