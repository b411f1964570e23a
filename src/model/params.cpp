#include "model/params.h"

#include <cmath>

#include "io/safetensors.h"
#include "tensor/error.h"

namespace parallama {

void ModelShard::validate(const LlamaConfig& c) const {
  auto s = [](int v) { return std::to_string(v); };
  if (first_layer < 0 || last_layer > c.n_layers || first_layer >= last_layer)
    throw Error("invalid model shard: layer range [" + s(first_layer) + ", " + s(last_layer) +
                ") must be a non-empty part of [0, " + s(c.n_layers) + ")");
  if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size)
    throw Error("invalid model shard: tensor-parallel rank " + s(tp_rank) + " of " + s(tp_size));
  if (c.n_heads % tp_size || c.n_kv_heads % tp_size || c.ffn_dim % tp_size)
    throw Error("invalid model shard: tensor-parallel size " + s(tp_size) +
                " must divide n_heads " + s(c.n_heads) + ", n_kv_heads " + s(c.n_kv_heads) +
                " and ffn_dim " + s(c.ffn_dim));
}

ParamLayout::ParamLayout(const LlamaConfig& config, const ModelShard& shard)
    : config_(config), shard_(shard) {
  config.validate();
  shard.validate(config);
  const int64_t C = config.dim, V = config.vocab_size, D = config.head_dim();
  const int64_t H = shard.local_heads(config), KVH = shard.local_kv_heads(config);
  const int64_t F = shard.local_ffn(config), tp = shard.tp_size;
  const float std_base = 0.02f;
  const float std_resid = std_base / std::sqrt(2.0f * config.n_layers);

  // pad = false keeps the next tensor adjacent (q|k|v and gate|up each form one matrix).
  auto add = [&](std::string name, ParamKind kind, Shape shape, int split, float init_std,
                 bool pad = true) {
    ParamSpec s;
    s.name = std::move(name);
    s.kind = kind;
    s.full_shape = shape;
    if (split >= 0) shape[split] /= tp;
    s.shape = shape;
    s.split_axis = split;
    s.numel = numel(shape);
    s.offset = total_;
    s.init_std = init_std;
    total_ += pad ? Arena::round(s.numel) : s.numel;  // groups start 64-byte aligned
    specs_.push_back(std::move(s));
  };
  if (shard.has_embedding)
    add("model.embed_tokens.weight", ParamKind::Embedding, {V, C}, -1, std_base);
  for (int l = shard.first_layer; l < shard.last_layer; ++l) {
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
    if (!config.tie_embeddings) add("lm_head.weight", ParamKind::Matrix, {V, C}, -1, std_base);
  }
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

uint64_t hash_name(const std::string& s) {  // FNV-1a
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
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
  const ModelShard& shard = params.layout().shard();
  params.visit([&](const ParamSpec& s, float* w) {
    if (s.init_std == 0.0f) {
      for (int64_t i = 0; i < s.numel; ++i) w[i] = 1.0f;
      return;
    }
    const uint64_t key = mix64(seed) ^ hash_name(s.name);
    const int64_t rows = s.shape[0], cols = s.shape[1], full_cols = s.full_shape[1];
    const int64_t row0 = s.split_axis == 0 ? shard.tp_rank * rows : 0;
    const int64_t col0 = s.split_axis == 1 ? shard.tp_rank * cols : 0;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        w[r * cols + c] = s.init_std * normal_at(key, uint64_t((row0 + r) * full_cols + col0 + c));
  });
}

void add_params(io::SafeTensorsWriter& w, const ParamBuffer& params, const std::string& prefix) {
  if (params.layout().shard().tp_size != 1)
    throw Error("saving a tensor-parallel slice needs a gather of whole tensors first");
  params.visit([&](const ParamSpec& s, const float* p) { w.add(prefix + s.name, p, s.shape); });
}

void read_params(const io::SafeTensorsReader& r, ParamBuffer& params, const std::string& prefix) {
  if (params.layout().shard().tp_size != 1)
    throw Error("loading into a tensor-parallel slice is not supported yet; load the whole model");
  if (params.layout().config().tie_embeddings && r.has(prefix + "lm_head.weight"))
    throw Error(r.path() +
                ": holds lm_head.weight but this model ties the head to the embedding "
                "(set model.tie_embeddings = false to load it)");
  params.visit([&](const ParamSpec& s, float* p) { r.read_f32(prefix + s.name, p, s.shape); });
}

void save_params(const ParamBuffer& params, const std::string& path) {
  io::SafeTensorsWriter w;
  add_params(w, params);
  w.write(path);
}

void load_params(ParamBuffer& params, const std::string& path) {
  read_params(io::SafeTensorsReader(path), params);
}

}  // namespace parallama
