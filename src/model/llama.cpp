#include "model/llama.h"

#include <cstring>
#include <string>

#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "tensor/error.h"

namespace parallama {

using namespace kernels;

Llama::Llama(const ParamLayout& layout, int64_t B, int64_t T)
    : cfg_(layout.config()), B_(B), T_(T) {
  const ModelShard& shard = layout.shard();
  if (!shard.is_whole(cfg_))
    throw Error(
        "this build runs whole-model shards only; pipeline and tensor-parallel layouts "
        "are not available yet (use --pp 1 --tp 1)");
  if (cfg_.shape_only)
    throw Error("preset '" + cfg_.name +
                "' is a published shape for sizing only and is not "
                "trained here; pick tiny, kjv-small or bench15m");
  if (B <= 0 || T <= 0) throw Error("batch size and sequence length must be positive");
  if (T > cfg_.max_seq_len)
    throw Error("sequence length " + std::to_string(T) + " exceeds the model's max_seq_len " +
                std::to_string(cfg_.max_seq_len));
  N_ = B * T;
  C_ = cfg_.dim, H_ = cfg_.n_heads, KVH_ = cfg_.n_kv_heads, D_ = cfg_.head_dim();
  F_ = cfg_.ffn_dim, V_ = cfg_.vocab_size, QKV_ = (H_ + 2 * KVH_) * D_;
  const int L = cfg_.n_layers;

  off_embed_ = layout.find("model.embed_tokens.weight").offset;
  off_norm_ = layout.find("model.norm.weight").offset;
  off_head_ = cfg_.tie_embeddings ? off_embed_ : layout.find("lm_head.weight").offset;
  for (int l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto& q = layout.find(p + "self_attn.q_proj.weight");
    const auto& k = layout.find(p + "self_attn.k_proj.weight");
    const auto& v = layout.find(p + "self_attn.v_proj.weight");
    const auto& gate = layout.find(p + "mlp.gate_proj.weight");
    const auto& up = layout.find(p + "mlp.up_proj.weight");
    // q, k, v (and gate, up) are adjacent rows of one matrix, so each group is one GEMM.
    if (k.offset != q.offset + q.numel || v.offset != k.offset + k.numel ||
        up.offset != gate.offset + gate.numel)
      throw Error("internal: fused projections are not adjacent in the parameter layout");
    lp_.push_back({layout.find(p + "input_layernorm.weight").offset, q.offset,
                   layout.find(p + "self_attn.o_proj.weight").offset,
                   layout.find(p + "post_attention_layernorm.weight").offset, gate.offset,
                   layout.find(p + "mlp.down_proj.weight").offset});
  }

  // Two passes over the same list: reserve sizes, then carve pointers.
  auto plan = [&](auto&& take) {
    res_.assign(L + 1, nullptr);
    acts_.assign(L, {});
    for (int l = 0; l <= L; ++l) res_[l] = take(N_ * C_);
    for (auto& a : acts_) {
      a.ln1 = take(N_ * C_), a.rstd1 = take(N_), a.qkv = take(N_ * QKV_);
      a.att = take(B_ * H_ * T_ * T_), a.atty = take(N_ * H_ * D_), a.res_mid = take(N_ * C_);
      a.ln2 = take(N_ * C_), a.rstd2 = take(N_), a.gu = take(N_ * 2 * F_), a.act = take(N_ * F_);
    }
    lnf_ = take(N_ * C_), rstdf_ = take(N_), logits_ = take(N_ * V_), ce_stats_ = take(2 * N_);
    losses_ = take(N_), cos_ = take(T_ * D_ / 2), sin_ = take(T_ * D_ / 2);
    dres_ = take(N_ * C_), dln_ = take(N_ * C_), dqkv_ = take(N_ * QKV_);
    datty_ = take(N_ * H_ * D_), dgu_ = take(N_ * 2 * F_), dact_ = take(N_ * F_);
  };
  plan([&](int64_t n) {
    arena_.reserve(n);
    return nullptr;
  });
  arena_.commit();
  plan([&](int64_t n) { return arena_.take(n); });
  rope_table(cos_, sin_, T_, D_, cfg_.rope_theta);
  tokens_.resize(N_);
  targets_.resize(N_);
}

void Llama::check_ids(const int32_t* ids, bool targets) const {
  for (int64_t n = 0; n < N_; ++n) {
    const int32_t id = ids[n];
    if (targets && id == kIgnoreIndex) continue;
    if (id < 0 || id >= V_)
      throw Error(std::string(targets ? "target" : "token") + " id " + std::to_string(id) +
                  " at batch row " + std::to_string(n / T_) + ", position " +
                  std::to_string(n % T_) + " is outside the vocabulary [0, " + std::to_string(V_) +
                  "); the data was made with another tokenizer or vocab_size is too small");
  }
}

float Llama::forward(const ParamBuffer& params, const int32_t* tokens, const int32_t* targets) {
  check_ids(tokens, false);
  check_ids(targets, true);
  std::memcpy(tokens_.data(), tokens, N_ * sizeof(int32_t));
  std::memcpy(targets_.data(), targets, N_ * sizeof(int32_t));
  const float* W = params.data();
  const AttnDims ad{B_, T_, H_, KVH_, D_, QKV_, QKV_};
  const int64_t HD = H_ * D_, KVD = KVH_ * D_;

  embedding_forward(res_[0], tokens_.data(), W + off_embed_, N_, C_);  // (N, C)
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const LayerActs& a = acts_[l];
    const LayerParams& p = lp_[l];
    rmsnorm_forward(a.ln1, a.rstd1, res_[l], W + p.ln1, N_, C_, cfg_.norm_eps);
    linear_forward(a.qkv, a.ln1, W + p.wqkv, N_, C_, QKV_);  // (N, QKV) = [q | k | v]
    rope_forward(a.qkv, cos_, sin_, B_, T_, H_, D_, QKV_);
    rope_forward(a.qkv + HD, cos_, sin_, B_, T_, KVH_, D_, QKV_);
    attention_forward(a.atty, a.att, a.qkv, a.qkv + HD, a.qkv + HD + KVD, ad);
    std::memcpy(a.res_mid, res_[l], N_ * C_ * sizeof(float));  // residual, then += attn · Woᵀ
    gemm(false, true, N_, C_, HD, 1.0f, a.atty, HD, W + p.wo, HD, 1.0f, a.res_mid, C_);
    rmsnorm_forward(a.ln2, a.rstd2, a.res_mid, W + p.ln2, N_, C_, cfg_.norm_eps);
    linear_forward(a.gu, a.ln2, W + p.wgu, N_, C_, 2 * F_);  // (N, 2F) = [gate | up]
    swiglu_forward(a.act, a.gu, N_, F_);
    std::memcpy(res_[l + 1], a.res_mid, N_ * C_ * sizeof(float));
    gemm(false, true, N_, C_, F_, 1.0f, a.act, F_, W + p.wdown, F_, 1.0f, res_[l + 1], C_);
  }
  rmsnorm_forward(lnf_, rstdf_, res_[cfg_.n_layers], W + off_norm_, N_, C_, cfg_.norm_eps);
  linear_forward(logits_, lnf_, W + off_head_, N_, C_, V_);  // (N, V)
  cross_entropy_forward(losses_, ce_stats_, logits_, targets_.data(), N_, V_);

  valid_ = 0;
  loss_sum_ = 0.0;
  for (int64_t n = 0; n < N_; ++n) {
    if (targets_[n] == kIgnoreIndex) continue;
    ++valid_;
    loss_sum_ += losses_[n];
  }
  return valid_ ? static_cast<float>(loss_sum_ / valid_) : 0.0f;
}

void Llama::backward(const ParamBuffer& params, ParamBuffer& grads, float grad_scale,
                     const std::function<void(int64_t)>& on_final) {
  auto final_from = [&](int64_t offset) {
    if (on_final) on_final(offset);
  };
  const float* W = params.data();
  float* G = grads.data();
  const AttnDims ad{B_, T_, H_, KVH_, D_, QKV_, QKV_};
  const int64_t HD = H_ * D_, KVD = KVH_ * D_;
  const int L = cfg_.n_layers;

  cross_entropy_backward(logits_, logits_, ce_stats_, targets_.data(), grad_scale, N_,
                         V_);  // in place
  linear_backward(dln_, G + off_head_, logits_, lnf_, W + off_head_, N_, C_, V_);
  rmsnorm_backward(dres_, G + off_norm_, dln_, res_[L], W + off_norm_, rstdf_, N_, C_);
  // With a tied head the embedding (offset 0) is still to be completed; the layout keeps the
  // final norm and an untied head after every layer.
  final_from(off_norm_);
  for (int l = L - 1; l >= 0; --l) {
    const LayerActs& a = acts_[l];
    const LayerParams& p = lp_[l];
    // res[l+1] = res_mid + act · Wdownᵀ: dres flows on unchanged to res_mid.
    linear_backward(dact_, G + p.wdown, dres_, a.act, W + p.wdown, N_, F_, C_);
    swiglu_backward(dgu_, dact_, a.gu, N_, F_);
    linear_backward(dln_, G + p.wgu, dgu_, a.ln2, W + p.wgu, N_, C_, 2 * F_);
    rmsnorm_backward(dres_, G + p.ln2, dln_, a.res_mid, W + p.ln2, a.rstd2, N_, C_, true);
    // res_mid = res[l] + atty · Woᵀ
    linear_backward(datty_, G + p.wo, dres_, a.atty, W + p.wo, N_, HD, C_);
    attention_backward(dqkv_, dqkv_ + HD, dqkv_ + HD + KVD, datty_, a.att, a.qkv, a.qkv + HD,
                       a.qkv + HD + KVD, ad);
    rope_backward(dqkv_, cos_, sin_, B_, T_, H_, D_, QKV_);
    rope_backward(dqkv_ + HD, cos_, sin_, B_, T_, KVH_, D_, QKV_);
    linear_backward(dln_, G + p.wqkv, dqkv_, a.ln1, W + p.wqkv, N_, C_, QKV_);
    rmsnorm_backward(dres_, G + p.ln1, dln_, res_[l], W + p.ln1, a.rstd1, N_, C_, true);
    final_from(p.ln1);
  }
  embedding_backward(G + off_embed_, dres_, tokens_.data(), N_, C_);
  final_from(0);
}

}  // namespace parallama
