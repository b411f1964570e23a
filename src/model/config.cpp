#include "model/config.h"

#include <cmath>
#include <limits>

#include "tensor/error.h"

namespace parallama {

Recompute parse_recompute(const std::string& name) {
  if (const auto r = value_named<Recompute>(name)) return *r;
  throw Error("unknown train.recompute '" + name + "' (choose none, attention or full)");
}

const char* recompute_name(Recompute r) {
  return name_of(r);
}

Precision parse_precision(const std::string& name) {
  if (const auto p = value_named<Precision>(name)) return *p;
  throw Error("unknown precision '" + name + "' (choose fp32, bf16 or fp16)");
}

const char* precision_name(Precision p) {
  return name_of(p);
}

namespace {

LlamaConfig make(const char* name, int dim, int layers, int heads, int kv_heads, int ffn, int vocab,
                 int seq, float theta, bool tied, bool shape_only) {
  LlamaConfig c;
  c.name = name;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.ffn_dim = ffn;
  c.vocab_size = vocab;
  c.max_seq_len = seq;
  c.rope_theta = theta;
  c.tie_embeddings = tied;
  c.shape_only = shape_only;
  return c;
}

std::vector<LlamaConfig> presets() {
  return {
      // Small enough for exhaustive tests; grouped-query attention (2 KV heads for 4 heads).
      make("tiny", 48, 2, 4, 2, 80, 101, 16, 10000.0f, false, false),
      make("kjv-small", 288, 6, 6, 6, 768, 4096, 256, 10000.0f, true, false),
      make("bench15m", 288, 6, 6, 6, 768, 32000, 256, 10000.0f, false, false),
      // Published shapes, for sizing and layout planning.
      make("llama2-7b", 4096, 32, 32, 32, 11008, 32000, 4096, 10000.0f, false, true),
      make("llama3-8b", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.0f, false, true),
      make("llama3.2-1b", 2048, 16, 32, 8, 8192, 128256, 131072, 500000.0f, true, true),
  };
}

void require(bool ok, const std::string& msg) {
  if (!ok) throw Error("invalid model shape: " + msg);
}

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  for (const auto& c : presets()) out.push_back(c.name);
  return out;
}

LlamaConfig llama_preset(const std::string& name) {
  if (name == "custom") return LlamaConfig{};  // a blank: every key of [model] given
  std::string known;
  for (const auto& c : presets()) {
    if (c.name == name) return c;
    known += (known.empty() ? "" : ", ") + c.name;
  }
  throw Error("unknown model preset '" + name + "' (known: " + known +
              ", or custom with every [model] key given)");
}

void LlamaConfig::validate() const {
  auto s = [](int v) { return std::to_string(v); };
  require(dim > 0, "dim must be positive, got " + s(dim));
  require(n_layers > 0, "n_layers must be positive, got " + s(n_layers));
  require(n_heads > 0, "n_heads must be positive, got " + s(n_heads));
  require(n_kv_heads > 0, "n_kv_heads must be positive, got " + s(n_kv_heads));
  require(ffn_dim > 0, "ffn_dim must be positive, got " + s(ffn_dim));
  require(vocab_size > 0, "vocab_size must be positive, got " + s(vocab_size));
  require(max_seq_len > 0, "max_seq_len must be positive, got " + s(max_seq_len));
  // Upper bounds far above any real model (Llama 3.1 405B: dim 16384, 126 layers, 128 heads,
  // ffn 53248, vocabulary 128256; the longest contexts are a few million tokens), so that a
  // mistyped value is an error at once instead of minutes of work or an allocation that fails.
  const auto at_most = [&](int v, int most, const char* name) {
    require(v <= most, std::string(name) + " must be at most " + s(most) + ", got " + s(v));
  };
  at_most(dim, 1 << 17, "dim");
  at_most(n_layers, 4096, "n_layers");
  at_most(n_heads, 4096, "n_heads");
  at_most(n_kv_heads, 4096, "n_kv_heads");
  at_most(ffn_dim, 1 << 20, "ffn_dim");
  at_most(vocab_size, 1 << 23, "vocab_size");
  at_most(max_seq_len, 1 << 27, "max_seq_len");
  require(dim % n_heads == 0, "dim " + s(dim) + " is not divisible by n_heads " + s(n_heads) +
                                  "; choose n_heads dividing dim");
  require(n_heads % n_kv_heads == 0, "n_heads " + s(n_heads) + " is not a multiple of n_kv_heads " +
                                         s(n_kv_heads) +
                                         "; each KV head must serve a whole group of heads");
  require(head_dim() % 2 == 0,
          "head dim " + s(head_dim()) + " (dim / n_heads) must be even for rotary embeddings");
  require(norm_eps > 0.0f && norm_eps < 1.0f, "norm_eps must lie between 0 and 1");
  require(rope_theta > 1.0f && std::isfinite(rope_theta),
          "rope_theta must be greater than 1 and finite");
  const kernels::RopeScaling& r = rope_scaling;
  if (r.type == kernels::RopeType::llama3)
    require(r.factor >= 1.0f && r.low_freq_factor > 0.0f &&
                r.high_freq_factor > r.low_freq_factor && r.original_max_len > 0,
            "llama3 rope scaling needs rope_factor >= 1, 0 < rope_low_freq_factor < "
            "rope_high_freq_factor and rope_original_max_len > 0");
  // Tensors are indexed with 32-bit ints in places; keep every tensor below 2^31 elements.
  const int64_t big = std::numeric_limits<int32_t>::max();
  require(int64_t(vocab_size) * dim < big, "vocab_size * dim exceeds 2^31 elements");
  require(int64_t(ffn_dim) * dim < big, "ffn_dim * dim exceeds 2^31 elements");
}

int64_t LlamaConfig::num_matmul_params() const {
  const int64_t C = dim, F = ffn_dim;
  const int64_t per_layer =
      C * (q_dim() + 2 * int64_t(kv_dim())) + int64_t(q_dim()) * C + 3 * C * F;
  return n_layers * per_layer + int64_t(vocab_size) * C;
}

int64_t LlamaConfig::num_params() const {
  const int64_t C = dim;
  const int64_t norms = int64_t(n_layers) * 2 * C + C;
  const int64_t embed = int64_t(vocab_size) * C;
  return num_matmul_params() + norms + (tie_embeddings ? 0 : embed);
}

}  // namespace parallama
