#include "infer/generate.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "tensor/error.h"

namespace parallama {

using namespace kernels;

Generator::Generator(const ParamLayout& layout, const ParamBuffer& params, comm::Group tp,
                     int64_t context)
    : cfg_(layout.config()), params_(params), tp_(std::move(tp)) {
  const ModelShard& sh = layout.shard();
  if (sh.first_layer != 0 || sh.last_layer != cfg_.n_layers || !sh.has_embedding || !sh.has_head)
    throw Error("generation runs every layer on each rank (use --pp 1)");
  if (sh.tp_size != tp_.size() || sh.tp_rank != tp_.rank())
    throw Error("internal: the shard's tensor-parallel rank does not match its group");
  C_ = cfg_.dim, H_ = sh.local_heads(cfg_), KVH_ = sh.local_kv_heads(cfg_), D_ = cfg_.head_dim();
  F_ = sh.local_ffn(cfg_), V_ = sh.local_vocab(cfg_), QKV_ = (H_ + 2 * KVH_) * D_;
  maxT_ = context > 0 ? std::min<int64_t>(context, cfg_.max_seq_len) : cfg_.max_seq_len;
  Vfull_ = cfg_.vocab_size, v0_ = sh.vocab_begin(cfg_);
  off_embed_ = layout.find("model.embed_tokens.weight").offset;
  off_norm_ = layout.find("model.norm.weight").offset;
  off_head_ = cfg_.tie_embeddings ? off_embed_ : layout.find("lm_head.weight").offset;
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n :
         {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.o_proj.weight",
          "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.down_proj.weight"})
      off_.push_back(layout.find(p + n).offset);
  }
  auto plan = [&](auto&& take) {
    x_ = take(C_), xn_ = take(C_), qkv_ = take(QKV_), att_ = take(maxT_), atty_ = take(H_ * D_);
    gu_ = take(2 * F_), act_ = take(F_), logits_ = take(Vfull_), local_ = take(V_);
    rstd_ = take(1);
    cos_ = take(maxT_ * D_ / 2), sin_ = take(maxT_ * D_ / 2);
    kcache_.assign(cfg_.n_layers, nullptr), vcache_.assign(cfg_.n_layers, nullptr);
    for (int l = 0; l < cfg_.n_layers; ++l)
      kcache_[l] = take(maxT_ * KVH_ * D_), vcache_[l] = take(maxT_ * KVH_ * D_);
  };
  arena_.plan(plan);
  rope_table(cos_, sin_, maxT_, D_, cfg_.rope_theta, 0, cfg_.rope_scaling);
}

const float* Generator::feed(int32_t token) {
  if (pos_ >= maxT_)
    throw Error("context is full: " + std::to_string(maxT_) + " tokens (max_seq_len " +
                std::to_string(cfg_.max_seq_len) + ")");
  if (token < 0 || token >= Vfull_)
    throw Error("token id " + std::to_string(token) + " outside the vocabulary");
  const float* W = params_.data();
  const int64_t HD = H_ * D_, KVD = KVH_ * D_, group = H_ / KVH_, half = D_ / 2;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D_));
  const bool adds_residual = tp_.rank() == 0;  // row-parallel sums count the residual once
  embedding_forward(x_, &token, W + off_embed_, 1, C_, v0_, V_);
  tp_.all_reduce(x_, C_);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const int64_t* o = &off_[6 * l];
    rmsnorm_forward(xn_, rstd_, x_, W + o[0], 1, C_, cfg_.norm_eps);
    linear_forward(qkv_, xn_, W + o[1], 1, C_, QKV_);
    rope_forward(qkv_, cos_ + pos_ * half, sin_ + pos_ * half, 1, 1, H_, D_, QKV_);
    rope_forward(qkv_ + HD, cos_ + pos_ * half, sin_ + pos_ * half, 1, 1, KVH_, D_, QKV_);
    std::memcpy(kcache_[l] + pos_ * KVD, qkv_ + HD, KVD * sizeof(float));
    std::memcpy(vcache_[l] + pos_ * KVD, qkv_ + HD + KVD, KVD * sizeof(float));
    for (int64_t h = 0; h < H_; ++h) {  // attention of the new token over positions 0..pos
      const int64_t g = h / group;
      const float* q = qkv_ + h * D_;
      float mx = -INFINITY, sum = 0.0f;
      for (int64_t j = 0; j <= pos_; ++j) {
        const float* k = kcache_[l] + j * KVD + g * D_;
        float s = 0.0f;
        for (int64_t i = 0; i < D_; ++i) s += q[i] * k[i];
        att_[j] = s * scale;
        mx = std::max(mx, att_[j]);
      }
      for (int64_t j = 0; j <= pos_; ++j) sum += (att_[j] = std::exp(att_[j] - mx));
      float* out = atty_ + h * D_;
      std::fill(out, out + D_, 0.0f);
      for (int64_t j = 0; j <= pos_; ++j) {
        const float* v = vcache_[l] + j * KVD + g * D_;
        const float p = att_[j] / sum;
        for (int64_t i = 0; i < D_; ++i) out[i] += p * v[i];
      }
    }
    if (!adds_residual) std::fill(x_, x_ + C_, 0.0f);
    gemm(false, true, 1, C_, HD, 1.0f, atty_, HD, W + o[2], HD, 1.0f, x_, C_);  // x += attn · Woᵀ
    tp_.all_reduce(x_, C_);
    rmsnorm_forward(xn_, rstd_, x_, W + o[3], 1, C_, cfg_.norm_eps);
    linear_forward(gu_, xn_, W + o[4], 1, C_, 2 * F_);
    swiglu_forward(act_, gu_, 1, F_);
    if (!adds_residual) std::fill(x_, x_ + C_, 0.0f);
    gemm(false, true, 1, C_, F_, 1.0f, act_, F_, W + o[5], F_, 1.0f, x_, C_);  // x += mlp
    tp_.all_reduce(x_, C_);
  }
  rmsnorm_forward(xn_, rstd_, x_, W + off_norm_, 1, C_, cfg_.norm_eps);
  linear_forward(local_, xn_, W + off_head_, 1, C_, V_);  // this rank's vocabulary columns
  tp_.all_gather(local_, logits_, comm::even_counts(Vfull_, tp_.size()));  // as the shards split
  ++pos_;
  return logits_;
}

int32_t Generator::sample(const float* logits, const SampleConfig& sc, std::mt19937_64& rng) {
  const int64_t V = Vfull_;
  if (sc.temperature <= 0.0f)
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  const float mx = *std::max_element(logits, logits + V);
  cand_.resize(V);
  double sum = 0.0;
  for (int64_t v = 0; v < V; ++v) {
    const float p = std::exp((logits[v] - mx) / sc.temperature);
    cand_[v] = {p, static_cast<int32_t>(v)};
    sum += p;
  }
  std::sort(cand_.begin(), cand_.end(), [](auto& a, auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  double mass = 0.0;
  size_t keep = 0;
  while (keep < cand_.size() && (keep == 0 || mass < sc.top_p * sum)) mass += cand_[keep++].first;
  const double r = std::uniform_real_distribution<double>(0.0, mass)(rng);
  double acc = 0.0;
  for (size_t i = 0; i < keep; ++i)
    if ((acc += cand_[i].first) >= r) return cand_[i].second;
  return cand_[keep - 1].second;
}

std::vector<int32_t> Generator::generate(const std::vector<int32_t>& prompt, const SampleConfig& sc,
                                         int32_t eos_id) {
  if (prompt.empty()) throw Error("the prompt must hold at least one token");
  if (static_cast<int64_t>(prompt.size()) >= maxT_)
    throw Error("the prompt has " + std::to_string(prompt.size()) +
                " tokens; the model's context is " + std::to_string(maxT_));
  reset();
  std::mt19937_64 rng(sc.seed);
  const float* logits = nullptr;
  for (int32_t t : prompt) logits = feed(t);
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < sc.max_tokens) {
    const int32_t next = sample(logits, sc, rng);
    if (next == eos_id) break;
    out.push_back(next);
    if (pos_ >= maxT_) break;  // context full
    logits = feed(next);
  }
  return out;
}

}  // namespace parallama
