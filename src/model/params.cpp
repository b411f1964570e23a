#include "model/params.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"
#include "tensor/hash.h"

namespace parallama {

ParamLayout::ParamLayout(const LlamaConfig& config, const ModelShard& shard,
                         const std::vector<ExtraParam>& extra)
    : config_(config), shard_(shard) {
  config.validate();
  shard.validate(config);
  const int64_t C = config.dim, V = config.vocab_size, D = config.head_dim();
  const int64_t H = shard.local_heads(config), KVH = shard.local_kv_heads(config);
  const int64_t F = shard.local_ffn(config), tp = shard.tp_size;
  const float std_base = 0.02f;
  const float std_resid = std_base / std::sqrt(2.0f * config.n_layers);

  // pad = false keeps the next tensor adjacent (q|k|v and gate|up each form one matrix).
  const int64_t Vl = shard.local_vocab(config), v0 = shard.vocab_begin(config);
  auto add = [&](std::string name, ParamKind kind, Shape shape, int split, float init_std,
                 bool pad = true) {
    ParamSpec s;
    s.name = std::move(name);
    s.kind = kind;
    s.full_shape = shape;
    if (split >= 0 && kind != ParamKind::Embedding && s.name != "lm_head.weight") {
      shape[split] /= tp;  // heads and FFN columns: equal shares
      s.split_offset = shard.tp_rank * shape[split];
    } else if (split == 0) {  // vocabulary rows: the first V % tp ranks hold one more
      shape[0] = Vl;
      s.split_offset = v0;
    }
    s.shape = shape;
    s.split_axis = split;
    s.numel = numel(shape);
    s.offset = total_;
    s.init_std = init_std;
    total_ += pad ? Arena::round(s.numel) : s.numel;  // groups start 64-byte aligned
    specs_.push_back(std::move(s));
  };
  if (shard.has_embedding)
    add("model.embed_tokens.weight", ParamKind::Embedding, {V, C}, 0, std_base);  // vocab rows
  for (const auto& [first, last] : shard.chunks())
    for (int l = first; l < last; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      // q, k, v (and gate, up) are adjacent so each group is one (rows, C) matrix for one GEMM.
      add(p + "input_layernorm.weight", ParamKind::Norm, {C}, -1, 0.0f);
      add(p + "self_attn.q_proj.weight", ParamKind::Matrix, {H * tp * D, C}, 0, std_base, false);
      add(p + "self_attn.k_proj.weight", ParamKind::Matrix, {KVH * tp * D, C}, 0, std_base, false);
      add(p + "self_attn.v_proj.weight", ParamKind::Matrix, {KVH * tp * D, C}, 0, std_base);
      add(p + "self_attn.o_proj.weight", ParamKind::Matrix, {C, H * tp * D}, 1, std_resid);
      add(p + "post_attention_layernorm.weight", ParamKind::Norm, {C}, -1, 0.0f);
      add(p + "mlp.gate_proj.weight", ParamKind::Matrix, {F * tp, C}, 0, std_base, false);
      add(p + "mlp.up_proj.weight", ParamKind::Matrix, {F * tp, C}, 0, std_base);
      add(p + "mlp.down_proj.weight", ParamKind::Matrix, {C, F * tp}, 1, std_resid);
    }
  if (shard.has_head) {
    add("model.norm.weight", ParamKind::Norm, {C}, -1, 0.0f);
    if (!config.tie_embeddings) add("lm_head.weight", ParamKind::Matrix, {V, C}, 0, std_base);
    if (shard.has_tied_copy(config)) {  // the head of a last stage that is tied to the embedding
      add("model.embed_tokens.weight", ParamKind::Embedding, {V, C}, 0, std_base);
      specs_.back().tied_copy = true;
    }
  }
  for (const ExtraParam& e : extra) add(e.name, e.kind, e.shape, -1, e.init_std, false);
  total_ = Arena::round(total_);
}

const ParamSpec& ParamLayout::find(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return s;
  throw Error("no parameter named '" + name + "' in this model shard");
}

void ParamBuffer::visit(const std::function<void(const ParamSpec&, float*)>& fn) {
  for (const auto& s : layout_->specs()) fn(s, at(s));
}

void ParamBuffer::visit(const std::function<void(const ParamSpec&, const float*)>& fn) const {
  for (const auto& s : layout_->specs()) fn(s, at(s));
}

namespace {

uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A standard normal sample that depends only on (key, index): Box-Muller on two hashed uniforms.
float normal_at(uint64_t key, uint64_t index) {
  const uint64_t a = mix64(key ^ mix64(2 * index)), b = mix64(key ^ mix64(2 * index + 1));
  const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;          // [0, 1)
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

}  // namespace

void init_params(ParamBuffer& params, uint64_t seed) {
  params.visit([&](const ParamSpec& s, float* w) {
    if (s.init_std == 0.0f) {
      std::fill(w, w + s.numel, s.kind == ParamKind::Bias ? 0.0f : 1.0f);
      return;
    }
    const uint64_t key = mix64(seed) ^ fnv1a64(s.name);
    const int64_t rows = s.shape[0], cols = s.shape[1], full_cols = s.full_shape[1];
    const int64_t row0 = s.split_axis == 0 ? s.split_offset : 0;
    const int64_t col0 = s.split_axis == 1 ? s.split_offset : 0;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        w[r * cols + c] = s.init_std * normal_at(key, uint64_t((row0 + r) * full_cols + col0 + c));
  });
}

}  // namespace parallama
