// The planner's time model, term by term (plan/plan.h): matrix multiplies at their shapes' rates,
// streaming work at the memory bandwidth, the optimizer update, and collective latencies.
#include <algorithm>
#include <cmath>

#include "plan/plan.h"

namespace parallama {

double gemm_rate(const Device& d, Precision p, double m, double n, double k) {
  if (d.gemm_gflops.empty()) return d.peak_tflops(p) * 1e12 * d.efficiency;
  const auto& c = d.gemm_gflops;
  const double size = std::cbrt(m * n * k);
  if (size <= c.front().first) return c.front().second * 1e9;
  if (size >= c.back().first) return c.back().second * 1e9;
  size_t i = 1;
  while (c[i].first < size) ++i;
  const double f = std::log(size / c[i - 1].first) / std::log(c[i].first / c[i - 1].first);
  return (c[i - 1].second + f * (c[i].second - c[i - 1].second)) * 1e9;
}

namespace {

double chunk_layers(const ModelShard& shard) {
  double layers = 0;
  for (const auto& [a, b] : shard.chunks()) layers += b - a;
  return layers;
}

}  // namespace

double matmul_seconds(const Device& d, Precision p, const LlamaConfig& m, const ModelShard& shard,
                      int64_t batch, int64_t seq_len, Recompute recompute) {
  const double N = static_cast<double>(batch * seq_len), T = static_cast<double>(seq_len);
  const double C = m.dim, D = m.head_dim(), H = shard.local_heads(m);
  const double KVH = shard.local_kv_heads(m), F = shard.local_ffn(m), V = shard.local_vocab(m);
  auto t = [&](double a, double b, double c) { return 2 * a * b * c / gemm_rate(d, p, a, b, c); };
  // Forward of one layer: the fused q|k|v and gate|up projections, the output and down ones;
  // attention's scores and weighted sum per sequence and head, over the causal half.
  const double layer = t(N, (H + 2 * KVH) * D, C) + t(N, C, H * D) + t(N, 2 * F, C) + t(N, C, F);
  const double attention = static_cast<double>(batch) * H * (t(T, T, D) + t(T, D, T)) / 2;
  const double layers = chunk_layers(shard);
  const double head = shard.has_head ? t(N, V, C) : 0.0;
  // Backward: the input's and the weight's gradient, each a product of the forward's size.
  double s = 3 * (layers * (layer + attention) + head);
  if (recompute == Recompute::full) s += layers * (layer + attention);
  if (recompute == Recompute::attention) s += layers * attention;
  return s;
}

double stream_seconds(const Device& d, Precision p, const LlamaConfig& m, const ModelShard& shard,
                      int64_t batch, int64_t seq_len) {
  if (d.memory_gbps <= 0) return 0.0;
  const double N = static_cast<double>(batch * seq_len), a = activation_bytes(p);
  const double C = m.dim, D = m.head_dim(), H = shard.local_heads(m);
  const double KVH = shard.local_kv_heads(m), F = shard.local_ffn(m), V = shard.local_vocab(m);
  // Per token and layer, forward and backward: two norms (5 vectors of C each), two residual
  // adds (6 each way), rotary on q and k (read and written, twice), SwiGLU (3F forward, 5F
  // backward).
  const double layer = (22 * C + 4 * (H + KVH) * D + 8 * F) * a;
  // The head: the final norm, and the loss's softmax over fp32 logits (read, exponentiated,
  // the gradient written); the embedding: a row gathered, and its gradient added back.
  const double head = shard.has_head ? 5 * C * a + 3 * V * 4 : 0.0;
  const double embedding = shard.has_embedding ? 3 * C * a : 0.0;
  return N * (chunk_layers(shard) * layer + head + embedding) / (d.memory_gbps * 1e9);
}

double optimizer_seconds(const Device& d, Precision p, int moments, double owned) {
  if (d.memory_gbps <= 0) return 0.0;
  // The fp32 parameters (a master copy, mixed) and moments read and written, the gradient read,
  // and with mixed precision the 16-bit working copy written; then the gradients zeroed.
  const double per = 8.0 * (1 + moments) + 2 * param_bytes(p) + (p == Precision::fp32 ? 0 : 2);
  return owned * per / (d.memory_gbps * 1e9);
}

double refault_seconds(const Device& d, double bytes) {
  return bytes / 4096 * d.page_fault_us * 1e-6;
}

double ring_latency_s(int n, bool all_reduce, double latency_us) {
  if (n <= 1) return 0.0;
  return (all_reduce ? 2.0 : 1.0) * (n - 1) * latency_us * 1e-6;
}

}  // namespace parallama
