// `parallama plan`: memory, communication, pipeline bubble, step time and MFU of a layout, on
// paper (src/plan/plan.h). Ranks that plan alike share a row; the largest is named.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "plan/plan.h"
#include "plan/profile.h"
#include "tensor/error.h"
#include "train/plan_command.h"
#include "train/step.h"

namespace parallama {

namespace {

// "0-7,16-23": increasing ranks as ranges.
std::string rank_ranges(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    out += (out.empty() ? "" : ",") + std::to_string(ranks[i]);
    if (j > i) out += "-" + std::to_string(ranks[j]);
    i = j + 1;
  }
  return out;
}

std::string layers_text(const LlamaConfig& m, const ModelShard& s) {
  std::string out;
  for (const auto& [a, b] : s.chunks())
    out += (out.empty() ? "" : " ") + ("[" + std::to_string(a) + "," + std::to_string(b) + ")");
  if (s.has_embedding) out += " +emb";
  if (s.has_head) out += s.has_tied_copy(m) ? " +head(tied copy)" : " +head";
  return out;
}

std::string slots_text(const std::vector<int>& slots) {
  std::string out;
  for (int n : slots) out += (out.empty() ? "" : "+") + std::to_string(n);
  return out;
}

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

// Prints `text` wrapped at 100 columns; continuation lines are indented 4 more than the first.
void say(const std::string& text) {
  const size_t lead = std::min(text.find_first_not_of(' '), text.size());
  std::string line(lead, ' ');
  bool empty = true;
  std::istringstream words(text.substr(lead));
  for (std::string word; words >> word; empty = false) {
    if (!empty && line.size() + 1 + word.size() > 100) {
      std::printf("%s\n", line.c_str());
      line = std::string(lead + 4, ' ') + word;
    } else {
      line += (empty ? "" : " ") + word;
    }
  }
  std::printf("%s\n", line.c_str());
}

// GB (1e9 bytes) when the largest of `values` reaches one, else MB (1e6).
std::pair<double, const char*> unit_for(double largest) {
  return largest >= 1e9 ? std::pair{1e9, "GB"} : std::pair{1e6, "MB"};
}

void print_plan(const Plan& p, const RunConfig& cfg) {
  const PlanInput& in = p.in;
  const LlamaConfig& m = in.model;
  const MeshShape& sh = in.shape;
  const Device& dev = p.device;
  const RankGroup& big = p.groups[p.largest];
  const char* zero_text[] = {"no ZeRO", "ZeRO-1 (optimizer state sharded over dp)",
                             "ZeRO-2 (optimizer state and gradients sharded over dp)"};
  const double n = static_cast<double>(m.num_params());
  say(format(
      "plan: %s (%s parameters), dp %d x tp %d x pp %d = %d ranks; %s; %s (%d moment%s); %s",
      m.name.c_str(), (n >= 1e9 ? format("%.2f B", n / 1e9) : format("%.2f M", n / 1e6)).c_str(),
      sh.dp, sh.tp, sh.pp, sh.size(),
      (in.precision == Precision::fp32
           ? std::string("fp32")
           : std::string(precision_name(in.precision)) + " mixed precision (" +
                 precision_name(in.precision) +
                 " weights, gradients and activations; fp32 master weights and moments)")
          .c_str(),
      optim_kind_name(cfg.optim.name), in.moments, in.moments > 1 ? "s" : "", zero_text[in.zero]));
  say(
      format("  per replica and step: %d micro-batch(es) of %lld x %lld tokens; pipeline %s%s; "
             "recompute %s; attention %s",
             in.micro_batches, static_cast<long long>(in.batch), static_cast<long long>(in.seq_len),
             schedule_name(in.schedule),
             sh.pp_virtual > 1 ? format(" (%d chunks per rank)", sh.pp_virtual).c_str() : "",
             recompute_name(in.recompute),
             "memory-light (a (B, H, T) log-sum-exp per layer, no (T, T) weights)"));

  size_t lw = 6;  // the layers column
  double most = 0, most_comm = 0;
  for (const RankGroup& g : p.groups) {
    lw = std::max(lw, layers_text(m, g.shard).size());
    most = std::max(most, g.memory());
    most_comm = std::max({most_comm, g.dp_bytes, g.tp_bytes, g.pp_bytes});
  }
  const int w = static_cast<int>(lw);
  const auto [mu, mn] = unit_for(most);
  say(
      format("memory per rank, %s; slots: micro-batches whose activations each model chunk holds "
             "at once",
             mn));
  std::printf("  %5s  %-15s %-*s %9s %9s %9s %11s %9s  %s\n", "stage", "ranks", w, "layers",
              "params", "grads", "optimizer", "activations", "total", "slots");
  for (const RankGroup& g : p.groups)
    std::printf("  %5d  %-15s %-*s %9.3f %9.3f %9.3f %11.3f %9.3f  %s\n", g.stage,
                rank_ranges(g.ranks).c_str(), w, layers_text(m, g.shard).c_str(),
                g.state.params / mu, g.state.grads / mu, g.state.optimizer / mu, g.activations / mu,
                g.memory() / mu, slots_text(g.slots).c_str());
  const double cap = dev.memory_gb * 1e9;
  say(format("  largest: stage %d (ranks %s): %.2f GB: %s %.0f GB (%.2f GB %s)", big.stage,
             rank_ranges(big.ranks).c_str(), big.memory() / 1e9,
             big.memory() <= cap ? "fits in" : "does NOT fit in", dev.memory_gb,
             std::abs(cap - big.memory()) / 1e9, big.memory() <= cap ? "free" : "over"));
  if (in.zero == 1)
    say("  ZeRO-1: gradients are the whole buffer; its reduce-scatter leaves each rank's summed "
        "piece in place, and only the optimizer state is sharded");
  if (in.zero >= 2)
    say(
        format("  ZeRO-2: gradients are the kept shard (1/dp); the whole gradient buffer (%.2f GB "
               "on the largest rank) is resident only during backward and released after its "
               "reduce-scatter, so the peak during backward is %.2f GB",
               big.grads_in_backward / 1e9,
               (big.memory() - big.state.grads + big.grads_in_backward) / 1e9));

  const auto [cu, cn] = unit_for(most_comm);
  say(
      format("communication per rank per step, %s sent + received (as bench and metrics.jsonl "
             "count it; half each way)",
             cn));
  std::printf("  %5s  %-15s %10s %10s %10s\n", "stage", "ranks", "dp", "tp", "pp");
  for (const RankGroup& g : p.groups)
    std::printf("  %5d  %-15s %10.3f %10.3f %10.3f\n", g.stage, rank_ranges(g.ranks).c_str(),
                g.dp_bytes / cu, g.tp_bytes / cu, g.pp_bytes / cu);
  say(
      format("  dp: %s; tp: per layer and micro-batch 2 all-reduces of (B, T, C) forward%s and 2 "
             "backward, plus the vocabulary-parallel embedding and loss; pp: (B, T, C) per "
             "micro-batch and stage boundary each way%s; scalar sums not counted",
             in.zero ? "reduce-scatter of the gradients, all-gather of the parameters"
                     : "all-reduce of the gradients",
             in.recompute == Recompute::full ? " (the attention one again with recompute)" : "",
             m.tie_embeddings && sh.pp > 1 ? ", and the tied embedding's gradient sum" : ""));

  if (sh.pp > 1)
    say(format("pipeline bubble: %.1f%% = (p-1)/(v*m+p-1), p %d, v %d, m %d", 100 * p.bubble, sh.pp,
               sh.pp_virtual, in.micro_batches));
  else
    say("pipeline bubble: none (one stage)");

  const double peak = dev.peak_tflops(in.precision);
  if (dev.measured())
    say(
        format("time: measured (--profile): each GEMM at its shape's rate (best %.1f GFLOP/s per "
               "rank), streaming work and the optimizer update at %.1f GB/s, links %.3g Gbit/s "
               "and %.1f us per message for dp and pp, %.3g Gbit/s and %.1f us for tp",
               peak * 1e3, dev.memory_gbps, dev.link_gbps, dev.latency_us, dev.tp_link_gbps,
               dev.tp_latency_us));
  else
    say(format(
        "time: %.0f TFLOP/s peak per device%s, kernels at %.0f%% of it (--compute-efficiency); "
        "links %.0f Gbit/s per rank for dp and pp (--link-gbps), %.0f Gbit/s for tp within a "
        "machine (--tp-link-gbps)",
        peak,
        dev.tflops > 0                    ? ""
        : in.precision != Precision::fp32 ? " (an H100 SXM's dense bf16 / fp16)"
                                          : " (an H100 SXM's dense TF32, for fp32)",
        100 * dev.efficiency, dev.link_gbps, dev.tp_link_gbps));
  std::printf("  %5s  %-15s %10s %10s %14s %14s\n", "stage", "ranks", "TFLOP", "compute s",
              "tp exposed s", "dp exposed s");
  for (const RankGroup& g : p.groups)
    std::printf("  %5d  %-15s %10.3f %10.4f %14.4f %14.4f\n", g.stage, rank_ranges(g.ranks).c_str(),
                g.flops / 1e12, g.compute_s, g.tp_exposed_s, g.dp_exposed_s);
  say(
      format("  step %.4f s = the pipeline's critical path (each stage's compute and exposed tp "
             "time for one micro-batch, the slowest stage's for the others), + %.4f s pipeline "
             "fill/drain transfers, + the exposed dp time%s",
             p.step_s, p.pp_exposed_s,
             p.device.oversubscription > 1
                 ? format(" (%.1f threads a core: idle ranks lend theirs, the dp copies count "
                          "whole)",
                          p.device.oversubscription)
                       .c_str()
                 : ""));
  say(
      format("  %.0f tokens/s; MFU %.1f%% (6*N + 12*L*T*C model FLOPs per token, as bench and "
             "PaLM count them, over %d ranks x %.3g TFLOP/s); hardware FLOPs utilization %.1f%% "
             "(the FLOPs executed: attention over the causal half only%s)",
             p.tokens_per_step / p.step_s, 100 * p.mfu, sh.size(), peak, 100 * p.hfu,
             in.recompute == Recompute::full ? ", and the recomputed forwards" : ""));
  say("  assumed: forward tp all-reduces wait for their GEMM, backward ones hide behind the "
      "weight-gradient GEMMs; pipeline transfers overlap compute except while filling and "
      "draining; dp buckets reduce during the last micro-batch's backward (the last bucket and "
      "ZeRO's parameter all-gather exposed); " +
      std::string(dev.measured() ? "the optimizer update counted after them"
                                 : "the optimizer update is not counted"));
}

nlohmann::json plan_json(const Plan& p, const RunConfig& cfg) {
  const PlanInput& in = p.in;
  const MeshShape& sh = in.shape;
  const int world = sh.size();
  nlohmann::json j = {{"model", in.model.name},
                      {"params", in.model.num_params()},
                      {"dp", sh.dp},
                      {"tp", sh.tp},
                      {"pp", sh.pp},
                      {"zero", in.zero},
                      {"precision", precision_name(in.precision)},
                      {"optimizer", optim_kind_name(cfg.optim.name)},
                      {"pp_schedule", schedule_name(in.schedule)},
                      {"pp_virtual", sh.pp_virtual},
                      {"micro_batches", in.micro_batches},
                      {"batch_size", in.batch},
                      {"seq_len", in.seq_len},
                      {"recompute", recompute_name(in.recompute)},
                      {"device",
                       {{"tflops", p.device.peak_tflops(in.precision)},
                        {"efficiency", p.device.efficiency},
                        {"link_gbps", p.device.link_gbps},
                        {"tp_link_gbps", p.device.tp_link_gbps},
                        {"memory_gb", p.device.memory_gb}}},
                      {"bubble", p.bubble},
                      {"step_s", p.step_s},
                      {"pp_exposed_s", p.pp_exposed_s},
                      {"tokens_per_step", p.tokens_per_step},
                      {"tokens_per_s", p.tokens_per_step / p.step_s},
                      {"model_flops", p.model_flops},
                      {"mfu", p.mfu},
                      {"hardware_flops", p.hardware_flops},
                      {"hfu", p.hfu}};
  const char* names[] = {"parameters", "gradients", "optimizer_state", "activations"};
  for (const char* n : names) j["bytes_per_rank"][n] = std::vector<double>(world);
  for (const char* n : {"dp", "tp", "pp"}) j["comm_bytes_per_rank"][n] = std::vector<double>(world);
  for (int r = 0; r < world; ++r) {
    const RankGroup& g = p.groups[p.group_of_rank[r]];
    const double mem[] = {g.state.params, g.state.grads, g.state.optimizer, g.activations};
    for (int i = 0; i < 4; ++i) j["bytes_per_rank"][names[i]][r] = mem[i];
    j["comm_bytes_per_rank"]["dp"][r] = g.dp_bytes;
    j["comm_bytes_per_rank"]["tp"][r] = g.tp_bytes;
    j["comm_bytes_per_rank"]["pp"][r] = g.pp_bytes;
  }
  for (const RankGroup& g : p.groups)
    j["groups"].push_back({{"stage", g.stage},
                           {"ranks", g.ranks},
                           {"layers", layers_text(in.model, g.shard)},
                           {"numel", g.numel},
                           {"slots", g.slots},
                           {"parameters", g.state.params},
                           {"gradients", g.state.grads},
                           {"optimizer_state", g.state.optimizer},
                           {"activations", g.activations},
                           {"total", g.memory()},
                           {"gradients_in_backward", g.grads_in_backward},
                           {"dp_bytes", g.dp_bytes},
                           {"tp_bytes", g.tp_bytes},
                           {"pp_bytes", g.pp_bytes},
                           {"flops", g.flops},
                           {"compute_s", g.compute_s},
                           {"tp_exposed_s", g.tp_exposed_s},
                           {"dp_s", g.dp_s},
                           {"dp_exposed_s", g.dp_exposed_s}});
  const RankGroup& big = p.groups[p.largest];
  j["largest"] = {{"group", p.largest},
                  {"stage", big.stage},
                  {"ranks", big.ranks},
                  {"bytes", big.memory()},
                  {"fits", big.memory() <= p.device.memory_gb * 1e9}};
  return j;
}

}  // namespace

Device plan_device(const PlanOptions& opt, Precision p) {
  const Device& f = opt.device;
  if (!(f.tflops >= 0) || !(f.efficiency > 0 && f.efficiency <= 1) || !(f.link_gbps > 0) ||
      !(f.tp_link_gbps > 0) || !(f.memory_gb > 0))
    throw Error(
        "--device-tflops, --link-gbps, --tp-link-gbps and --device-gb must be positive "
        "and --compute-efficiency in (0, 1]");
  if (opt.profile.empty()) return f;
  Device d = read_profile(opt.profile).device(p);
  auto given = [&](const char* flag) {
    return std::find(opt.given.begin(), opt.given.end(), flag) != opt.given.end();
  };
  if (given("--device-tflops")) d.gemm_gflops.clear(), d.tflops = f.tflops;  // the assumed device
  if (given("--compute-efficiency")) d.gemm_gflops.clear(), d.efficiency = f.efficiency;
  if (given("--link-gbps")) d.link_gbps = f.link_gbps;
  if (given("--tp-link-gbps")) d.tp_link_gbps = f.tp_link_gbps;
  if (given("--device-gb")) d.memory_gb = f.memory_gb;
  return d;
}

AutoInput auto_input(const RunConfig& cfg, const PlanOptions& opt) {
  AutoInput a;
  a.base = plan_input(cfg);
  a.base.precision = parse_precision(opt.precision);
  const MeshShape& sh = a.base.shape;
  a.ranks_per_host = opt.ranks_per_host > 0 ? opt.ranks_per_host : sh.size();
  a.ranks = opt.hosts * a.ranks_per_host;
  a.global_batch = opt.global_batch > 0 ? opt.global_batch
                                        : static_cast<int64_t>(sh.dp) * cfg.train.batch_size *
                                              cfg.train.micro_batches;
  a.precisions = {a.base.precision};
  if (opt.any_precision) a.precisions = {Precision::fp32, Precision::bf16};
  return a;
}

namespace {

nlohmann::json candidate_json(const Candidate& c) {
  const PlanInput& in = c.in;
  return {{"dp", in.shape.dp},
          {"tp", in.shape.tp},
          {"pp", in.shape.pp},
          {"pp_virtual", in.shape.pp_virtual},
          {"pp_schedule", schedule_name(in.schedule)},
          {"zero", in.zero},
          {"batch_size", in.batch},
          {"micro_batches", in.micro_batches},
          {"recompute", recompute_name(in.recompute)},
          {"precision", precision_name(in.precision)},
          {"step_s", c.step_s},
          {"tokens_per_s", c.tokens_per_s},
          {"memory_bytes", c.memory},
          {"fits", c.fits},
          {"dominant", c.dominant},
          {"terms_s",
           {{"compute", c.terms[0]},
            {"tp", c.terms[1]},
            {"bubble", c.terms[2]},
            {"dp", c.terms[3]},
            {"pp", c.terms[4]}}}};
}

int run_plan_auto(const RunConfig& cfg, const PlanOptions& opt, bool json) {
  const AutoInput a = auto_input(cfg, opt);
  const Device device = plan_device(opt, a.base.precision);
  const AutoResult r = search_layouts(a, device);
  int fit = 0;
  for (const Candidate& c : r.valid) fit += c.fits;
  say(
      format("auto: %s on %d host(s) x %d rank(s), %lld sequences of %lld tokens a step; %d "
             "layouts considered, %zu valid, %d fit in %.1f GB per rank%s",
             cfg.model.name.c_str(), a.ranks / a.ranks_per_host, a.ranks_per_host,
             static_cast<long long>(a.global_batch), static_cast<long long>(a.base.seq_len),
             r.considered, r.valid.size(), fit, device.memory_gb,
             opt.profile.empty() ? " (the assumed device: give --profile for this machine)"
                                 : (" (profile " + opt.profile + ")").c_str()));
  if (fit == 0)
    throw Error("plan --auto: no layout fits in " + format("%.1f", device.memory_gb) +
                " GB per rank");
  std::printf("  %2s  %-78s %9s %10s %9s  %s\n", "#", "layout", "step s", "tokens/s", "memory",
              "dominant");
  for (int i = 0; i < std::min(fit, 10); ++i) {
    const Candidate& c = r.valid[i];
    std::printf("  %2d  %-78s %9.4f %10.0f %8.3fG  %s\n", i + 1, layout_text(c.in).c_str(),
                c.step_s, c.tokens_per_s, c.memory / 1e9, c.dominant.c_str());
  }
  if (json) {
    nlohmann::json j = {{"considered", r.considered}, {"layouts", nlohmann::json::array()}};
    for (const Candidate& c : r.valid) j["layouts"].push_back(candidate_json(c));
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace

int run_plan(const RunConfig& cfg, const PlanOptions& opt, bool json) {
  if (opt.auto_layout) return run_plan_auto(cfg, opt, json);
  if (cfg.parallel.strategy.sync != Sync::allreduce)
    throw Error(std::string("plan models --sync allreduce (with or without ZeRO), not --sync ") +
                sync_name(cfg.parallel.strategy.sync));
  PlanInput in = plan_input(cfg);
  in.precision = parse_precision(opt.precision);
  const Device device = plan_device(opt, in.precision);
  const Plan plan = make_plan(in, device);
  print_plan(plan, cfg);
  if (json) std::printf("%s\n", plan_json(plan, cfg).dump().c_str());
  return 0;
}

}  // namespace parallama
