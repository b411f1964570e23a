#include "plan/plan.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "model/params.h"
#include "parallel/powersgd.h"
#include "parallel/zero.h"
#include "tensor/arena.h"
#include "tensor/error.h"

namespace parallama {

double param_bytes(Precision p) {
  return p == Precision::fp32 ? 4.0 : 2.0;
}

double activation_bytes(Precision p) {
  return p == Precision::fp32 ? 4.0 : 2.0;
}

double Device::peak_tflops(Precision p) const {
  if (tflops > 0) return tflops;
  return p == Precision::fp32 ? 495.0 : 989.0;  // H100 SXM dense: TF32, bf16 / fp16
}

StateBytes model_state_bytes(double numel, Precision p, int moments, int zero, int dp) {
  const double P = param_bytes(p), G = P;
  const double K = 4.0 * moments + (p == Precision::fp32 ? 0.0 : 4.0);  // + fp32 master copy
  const double shards = std::max(dp, 1);
  StateBytes s;
  s.params = P * numel;
  s.grads = (zero >= 2 ? G / shards : G) * numel;
  s.optimizer = (zero >= 1 ? K / shards : K) * numel;
  return s;
}

std::vector<int> slots_per_chunk(PipeSchedule s, int stages, int rank, int micro, int virt) {
  std::vector<int> peak(std::max(virt, 1), 1);
  if (stages <= 1) return peak;  // no pipeline: micro-batches one after the other
  std::vector<int> live(peak.size(), 0);
  for (const PipeAction& a : pipeline_schedule(s, stages, rank, micro, virt)) {
    int& n = live.at(a.chunk);
    n += a.op == PipeOp::Forward ? 1 : -1;
    peak[a.chunk] = std::max(peak[a.chunk], n);
  }
  return peak;
}

double activation_bytes(const LlamaConfig& m, const ModelShard& shard, int64_t B, int64_t T,
                        const std::vector<int>& slots, Recompute recompute, Precision p) {
  // Every piece is carved out of an arena that rounds it up to 64 bytes (tensor/arena.h).
  auto r = [](int64_t n) { return static_cast<double>(Arena::round(static_cast<size_t>(n))); };
  const int64_t N = B * T, C = m.dim, D = m.head_dim();
  const int64_t H = shard.local_heads(m), KVH = shard.local_kv_heads(m);
  const int64_t F = shard.local_ffn(m), V = shard.local_vocab(m), QKV = (H + 2 * KVH) * D;
  // One layer: ln1, rstd1, qkv, the attention rows' log-sum-exp (B, H, T) and output, res_mid,
  // ln2, rstd2, gate|up, act (Llama::LayerActs; attention is memory-light: no T × T).
  const double attention = r(B * H * T) + r(N * H * D);
  const double layer = r(N * C) + r(N) + r(N * QKV) + attention + r(N * C) + r(N * C) + r(N) +
                       r(N * 2 * F) + r(N * F);
  // The head: final norm and its rstd, logits (N, V/tp), loss statistics and losses.
  const double head = r(N * C) + r(N) + r(N * V) + r(2 * N) + r(2 * N) + r(N) + r(N);
  // Shared: cos and sin (T, D/2); backward scratch dres, dln (N, C), dqkv, datty, dgu, dact.
  double floats =
      2 * r(T * D / 2) + 2 * r(N * C) + r(N * QKV) + r(N * H * D) + r(N * 2 * F) + r(N * F);
  // Recompute: the one layer being recomputed in backward (full), or one layer's attention
  // output and log-sum-exp (attention), in the shared scratch.
  if (recompute == Recompute::full) floats += layer;
  if (recompute == Recompute::attention) floats += attention;
  const auto chunks = shard.chunks();
  if (slots.size() != chunks.size())
    throw Error("internal: " + std::to_string(slots.size()) + " slot counts for " +
                std::to_string(chunks.size()) + " model chunks");
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t nl = chunks[c].second - chunks[c].first;
    double slot = static_cast<double>(nl + 1) * r(N * C);  // residual stream: each layer's input
    if (recompute == Recompute::none) slot += static_cast<double>(nl) * layer;
    if (recompute == Recompute::attention) slot += static_cast<double>(nl) * (layer - attention);
    if (c + 1 == chunks.size() && shard.has_head) slot += head;
    floats += slots[c] * slot;
  }
  return floats * activation_bytes(p);
}

namespace {

// Bytes one rank sends in a ring all-reduce of `bytes` over n ranks.
double all_reduce_sent(double bytes, int n) {
  return n > 1 ? 2.0 * (n - 1) / n * bytes : 0.0;
}

struct Traffic {
  double tp_fwd = 0, tp_bwd = 0, pp = 0, tied = 0, dp_reduce = 0, dp_gather = 0;
};

// What one rank of `shard` on pipeline rank `stage` sends in one step.
Traffic rank_traffic(const PlanInput& in, const ModelShard& shard, int stage, int64_t numel) {
  const LlamaConfig& m = in.model;
  const MeshShape& sh = in.shape;
  const double N = static_cast<double>(in.batch * in.seq_len), C = m.dim;
  const double act = activation_bytes(in.precision), grad = param_bytes(in.precision);
  const double micro = in.micro_batches;
  const int tp = sh.tp, dp = sh.dp;
  Traffic t;
  const auto chunks = shard.chunks();
  const int last_vstage = virtual_stages(sh.pp, static_cast<int>(chunks.size())) - 1;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const double nl = chunks[c].second - chunks[c].first;
    const bool embedding = c == 0 && shard.has_embedding;
    const bool head = c + 1 == chunks.size() && shard.has_head;
    // Tensor parallel, per micro-batch: each layer sums its attention and its MLP output in
    // forward (a full recompute sums the attention output again: the layer's output is not
    // recomputed) and their input gradients in backward; the embedding sums
    // its rows; the vocabulary-parallel loss takes row maxima and (sum of exponentials, target
    // logit) in fp32, and the head's input gradient is summed in backward.
    const double layer_sum = all_reduce_sent(N * C * act, tp);
    t.tp_fwd += micro * ((in.recompute == Recompute::full ? 3 : 2) * nl * layer_sum +
                         (embedding ? layer_sum : 0) + (head ? all_reduce_sent(3 * N * 4, tp) : 0));
    t.tp_bwd += micro * (2 * nl * layer_sum + (head ? layer_sum : 0));
    // Pipeline: the output activations forward and the input gradient backward, per
    // micro-batch, each message with a stamp of 4 floats.
    const int vk = virtual_stage(sh.pp, stage, static_cast<int>(c));
    const double message = N * C * act + 16;
    if (vk < last_vstage) t.pp += micro * message;
    if (vk > 0) t.pp += micro * message;
  }
  // The first and the last stage sum the gradients of their tied embedding copies (under ZeRO
  // only the piece of the table this data-parallel rank owns, after the reduce-scatter).
  if (sh.pp > 1 && m.tie_embeddings && (stage == 0 || stage == sh.pp - 1)) {
    const double table = static_cast<double>(shard.local_vocab(m)) * C;
    t.tied = all_reduce_sent((in.zero > 0 ? std::ceil(table / dp) : table) * grad, 2);
  }
  // Data parallel, once per step: all-reduce the gradients; with ZeRO reduce-scatter them and
  // all-gather the updated parameters.
  if (dp > 1) {
    const double wire = in.compress == Compress::bf16   ? 2.0
                        : in.compress == Compress::int8 ? 1.0 + 4.0 / comm::kWireInt8Block
                                                        : grad;
    const double g = in.compress == Compress::powersgd
                         ? 4.0 * static_cast<double>(
                                     lowrank_wire_floats(ParamLayout(m, shard), in.powersgd_rank))
                         : static_cast<double>(numel) * wire;
    const double share = (dp - 1.0) / dp;
    if (in.zero == 0 && in.sparse_embedding && shard.has_embedding && !m.tie_embeddings) {
      // The table's rows that the step's tokens touch (at most), and the mask of 64-row words.
      const double V = static_cast<double>(shard.local_vocab(m));
      const double rows = std::min(V, dp * micro * N);
      t.dp_reduce = all_reduce_sent(g - (V - rows) * C * grad, dp) +
                    all_reduce_sent(8 * std::ceil(V / 64), dp);
    } else if (in.zero == 0) {
      t.dp_reduce = all_reduce_sent(g, dp);
    } else {
      t.dp_reduce = share * g;
      t.dp_gather = share * static_cast<double>(numel) * param_bytes(in.precision);
    }
  }
  return t;
}

}  // namespace

double model_flops_per_token(const LlamaConfig& m, int64_t seq_len) {
  return 6.0 * static_cast<double>(m.num_matmul_params()) +
         12.0 * m.n_layers * static_cast<double>(seq_len) * m.dim;
}

// A rank group's memory: its model state (ZeRO: the pieces it owns) and its activations.
static void group_memory(RankGroup& g, const PlanInput& in, int stage) {
  const LlamaConfig& m = in.model;
  const MeshShape& sh = in.shape;
  const int virt = std::max(sh.pp_virtual, 1);
  g.slots = slots_per_chunk(in.schedule, sh.pp, stage, in.micro_batches, virt);
  // ZeRO: the pieces of the gradient buckets this rank owns (a tied embedding in a bucket
  // of its own), as training divides them; dp rank 0 owns the most (by a float per bucket).
  const double P = param_bytes(in.precision), numel = static_cast<double>(g.numel);
  g.state = model_state_bytes(numel, in.precision, in.moments, 0, sh.dp);
  if (in.zero > 0) {
    const ParamLayout layout(m, g.shard);
    const bool alone = m.tie_embeddings && sh.pp > 1 && (stage == 0 || stage == sh.pp - 1);
    const auto limit = static_cast<int64_t>(in.bucket_mb * (1 << 20) / sizeof(float));
    g.owned = make_zero_plan(layout, sh.dp, 0, limit,
                             alone ? layout.find("model.embed_tokens.weight").offset : -1)
                  .owned;
    g.state.optimizer *= static_cast<double>(g.owned) / numel;
    // ZeRO-1 keeps the whole gradient buffer (its reduce-scatter sums each piece in place);
    // ZeRO-2 only the owned shard between steps (the whole buffer lives during backward,
    // until its reduce-scatter).
    if (in.zero >= 2) {
      g.state.grads = static_cast<double>(g.owned) * P;
      g.grads_in_backward = numel * P;
    }
  }
  // int8's error feedback: what each rank's compression dropped, one fp32 per parameter.
  if (error_feedback(in.compress) && sh.dp > 1) g.state.grads += 4.0 * numel;
  if (in.compress == Compress::powersgd && sh.dp > 1)  // the warm start, and one step's factors
    g.state.grads +=
        4.0 * static_cast<double>(lowrank_state_floats(ParamLayout(m, g.shard), in.powersgd_rank) +
                                  lowrank_wire_floats(ParamLayout(m, g.shard), in.powersgd_rank));
  g.activations =
      activation_bytes(m, g.shard, in.batch, in.seq_len, g.slots, in.recompute, in.precision);
}

// A rank group's compute time, and the time its tensor- and data-parallel traffic t takes and
// shows beyond the compute.
static void group_time(RankGroup& g, const PlanInput& in, const Device& device,
                       const StageCosts& costs, const Traffic& t) {
  const LlamaConfig& m = in.model;
  const MeshShape& sh = in.shape;
  const int virt = std::max(sh.pp_virtual, 1);
  const double rate = device.peak_tflops(in.precision) * 1e12 * device.efficiency;
  const double link = device.link_gbps * 1e9 / 8, tp_link = device.tp_link_gbps * 1e9 / 8;
  const double tokens = static_cast<double>(in.micro_batches * in.batch * in.seq_len);
  // Compute: forward and backward of this rank's layers (a recomputed layer runs its forward
  // twice), the embedding and the head; tensor parallelism divides all alike.
  double layers = 0;
  for (const auto& [a, b] : g.shard.chunks()) layers += b - a;
  const double fwd_bwd = layers * costs.layer + (g.shard.has_embedding ? costs.embedding : 0) +
                         (g.shard.has_head ? costs.head : 0);
  // Recompute redoes, per layer and token, the forward without its down projection (full)
  // or the attention scores and weighted sum, 2·T·C with the causal mask (attention).
  const double C = m.dim, F = m.ffn_dim, T = static_cast<double>(in.seq_len);
  const double redo = in.recompute == Recompute::full ? layers * (costs.layer / 3 - 2 * C * F)
                      : in.recompute == Recompute::attention ? layers * 2 * T * C
                                                             : 0.0;
  g.flops = tokens * (fwd_bwd + redo) / sh.tp;
  g.compute_s = g.flops / rate;
  double wgrad_s = tokens * fwd_bwd / 3 / sh.tp / rate;  // the weight gradients' GEMMs
  double update_s = 0;                                   // the optimizer's, after the reduction
  if (device.measured()) {  // each GEMM at its shape's rate, streaming work, the update
    const double mm = in.micro_batches * matmul_seconds(device, in.precision, m, g.shard, in.batch,
                                                        in.seq_len, in.recompute);
    const double owned = static_cast<double>(in.zero > 0 && sh.dp > 1 ? g.owned : g.numel);
    update_s = optimizer_seconds(device, in.precision, in.moments, owned);
    g.compute_s =
        mm +
        in.micro_batches * stream_seconds(device, in.precision, m, g.shard, in.batch, in.seq_len) +
        update_s;
    if (in.zero >= 2 && sh.dp > 1) g.compute_s += refault_seconds(device, g.grads_in_backward);
    wgrad_s = mm / 3;
  }
  // The forward sums wait for their GEMM's result; the backward ones overlap the weight
  // gradient GEMMs (about a third of the work) and show only beyond them. Each sum also waits
  // for its ring's steps (measured latency).
  const double fwd_sums = (in.recompute == Recompute::full ? 3 : 2) * layers +
                          (g.shard.has_embedding ? 1 : 0) + (g.shard.has_head ? 3 : 0);
  const double sums = in.micro_batches * (fwd_sums + 2 * layers + (g.shard.has_head ? 1 : 0));
  g.tp_exposed_s = t.tp_fwd / tp_link + std::max(0.0, t.tp_bwd / tp_link - wgrad_s) +
                   sums * ring_latency_s(sh.tp, true, device.tp_latency_us);
  // Data parallel: buckets reduce during the last micro-batch's backward; at least the last
  // bucket is exposed, and ZeRO's all-gather of the updated parameters follows the step.
  if (sh.dp > 1) {
    double reduce_s = t.dp_reduce / link, gather_s = t.dp_gather / link;
    const double window = (g.compute_s - update_s - wgrad_s) / (in.micro_batches * virt);
    const double g_bytes = static_cast<double>(g.numel) * param_bytes(in.precision);
    const double bucket = std::min(in.bucket_mb * (1 << 20), g_bytes);
    const double bucket_lat = ring_latency_s(sh.dp, in.zero == 0, device.latency_us);
    const double buckets = std::ceil(g_bytes / bucket);
    const double bucket_s =
        (in.zero == 0 ? all_reduce_sent(bucket, sh.dp) : (sh.dp - 1.0) / sh.dp * bucket) / link +
        bucket_lat;
    reduce_s += buckets * bucket_lat;
    if (in.zero > 0) gather_s += buckets * ring_latency_s(sh.dp, false, device.latency_us);
    g.dp_s = reduce_s + gather_s;
    g.dp_exposed_s = std::max(reduce_s - window, bucket_s) + gather_s;
  }
}

double pipeline_bubble(int stages, int chunks, int64_t micro_batches) {
  const double p = stages, v = chunks, m = static_cast<double>(micro_batches);
  return (p - 1) / (v * m + p - 1);
}

Plan make_plan(const PlanInput& in, const Device& device) {
  const LlamaConfig& m = in.model;
  const MeshShape& sh = in.shape;
  if (in.batch < 1 || in.seq_len < 1 || in.micro_batches < 1)
    throw Error("batch size, sequence length and micro-batches must each be at least 1");
  if (in.zero < 0 || in.zero > 2) throw Error("--zero must be 0, 1 or 2");
  Plan plan;
  plan.in = in;
  plan.device = device;
  plan.group_of_rank.assign(sh.size(), -1);
  const double peak = device.peak_tflops(in.precision) * 1e12;
  const double link = device.link_gbps * 1e9 / 8;
  const StageCosts costs = stage_costs(m, static_cast<int>(in.seq_len));
  const double tokens = static_cast<double>(in.micro_batches * in.batch * in.seq_len);
  const int virt = std::max(sh.pp_virtual, 1);

  for (int stage = 0; stage < sh.pp; ++stage) {
    for (int tp = 0; tp < sh.tp;) {
      RankGroup g;
      g.stage = stage;
      g.shard = mesh_shard(m, sh, {0, tp, stage});
      g.numel = ParamLayout(m, g.shard).total();
      int end = tp + 1;  // the following ranks with a shard of the same sizes
      while (end < sh.tp &&
             mesh_shard(m, sh, {0, end, stage}).local_vocab(m) == g.shard.local_vocab(m))
        ++end;
      for (int t = tp; t < end; ++t)
        for (int d = 0; d < sh.dp; ++d) g.ranks.push_back(mesh_rank(sh, {d, t, stage}));
      std::sort(g.ranks.begin(), g.ranks.end());
      tp = end;

      group_memory(g, in, stage);
      const Traffic t = rank_traffic(in, g.shard, stage, g.numel);
      // Every rank receives what it sends: collectives are symmetric, and a stage receives from
      // its neighbours as many messages as it sends them.
      g.tp_bytes = 2 * (t.tp_fwd + t.tp_bwd);
      g.pp_bytes = 2 * (t.pp + t.tied);
      g.dp_bytes = 2 * (t.dp_reduce + t.dp_gather);

      group_time(g, in, device, costs, t);
      for (int r : g.ranks) plan.group_of_rank[r] = static_cast<int>(plan.groups.size());
      plan.groups.push_back(std::move(g));
    }
  }

  double busy = 0, dp_exposed = 0, dp_total = 0, most = -1, work = 0;
  for (size_t i = 0; i < plan.groups.size(); ++i) {
    const RankGroup& g = plan.groups[i];
    busy = std::max(busy, g.compute_s + g.tp_exposed_s);
    work += (g.compute_s + g.tp_exposed_s) * static_cast<double>(g.ranks.size());
    dp_exposed = std::max(dp_exposed, g.dp_exposed_s);
    dp_total = std::max(dp_total, g.dp_s);
    if (g.memory() > most) most = g.memory(), plan.largest = static_cast<int>(i);
  }
  if (sh.pp > 1) {
    plan.bubble = pipeline_bubble(sh.pp, virt, in.micro_batches);
    // Transfers overlap the steady state; filling and draining the pipeline waits for one
    // message per virtual-stage boundary each way. The tied-embedding sum follows backward.
    const double N = static_cast<double>(in.batch * in.seq_len);
    const double message = N * m.dim * activation_bytes(in.precision) + 16;
    plan.pp_exposed_s = 2.0 * (sh.pp * virt - 1) * (message / link + device.latency_us * 1e-6);
    if (m.tie_embeddings)
      plan.pp_exposed_s += static_cast<double>(m.vocab_size) / sh.tp / (in.zero ? sh.dp : 1) *
                           m.dim * param_bytes(in.precision) / link;
  }
  // The pipeline's critical path: with one chunk per rank, every stage's time for one
  // micro-batch once plus the slowest stage's for the others (1F1B; equal stages make it
  // busy / (1 - bubble)); interleaved chunks, the bubble formula.
  double critical = busy / (1 - plan.bubble);
  if (sh.pp > 1 && virt == 1) {
    std::vector<double> stage(sh.pp, 0.0);
    for (const RankGroup& g : plan.groups)
      stage[g.stage] = std::max(stage[g.stage], g.compute_s + g.tp_exposed_s);
    double sum = 0;
    for (double t : stage) sum += t;
    critical = (sum + (in.micro_batches - 1) * busy) / in.micro_batches;
  }
  // More threads than cores (measured rates are each rank's share): a rank idle in the bubble
  // lends its core, so the critical path runs up to `oversubscription` times faster, but the
  // ranks' work together still takes the cores' time.
  const double s = std::max(1.0, device.oversubscription);
  const double core_s = s > 1 ? std::max(critical / s, work / sh.size()) : critical;
  // There the data-parallel reduction's copies run on the same cores as the compute they would
  // hide behind: all of it counts.
  plan.step_s = core_s + plan.pp_exposed_s + (s > 1 ? dp_total : dp_exposed);
  plan.tokens_per_step = tokens * sh.dp;
  plan.model_flops = model_flops_per_token(m, in.seq_len) * plan.tokens_per_step;
  plan.mfu = plan.model_flops / (sh.size() * plan.step_s * peak);
  for (const RankGroup& g : plan.groups)
    plan.hardware_flops += g.flops * static_cast<double>(g.ranks.size());
  plan.hfu = plan.hardware_flops / (sh.size() * plan.step_s * peak);
  return plan;
}

}  // namespace parallama
