#include "model/llama.h"

#include <chrono>
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

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Llama::Llama(const ParamLayout& layout, int64_t B, int64_t T, comm::Group tp)
    : cfg_(layout.config()), tp_(std::move(tp)), B_(B), T_(T) {
  const ModelShard& shard = layout.shard();
  if (shard.first_layer != 0 || shard.last_layer != cfg_.n_layers || !shard.has_embedding ||
      !shard.has_head)
    throw Error("pipeline stages are not available yet: every rank runs all layers (use --pp 1)");
  if (shard.tp_size != tp_.size() || shard.tp_rank != tp_.rank())
    throw Error("internal: the model shard is tensor-parallel rank " +
                std::to_string(shard.tp_rank) + " of " + std::to_string(shard.tp_size) +
                " but its group is rank " + std::to_string(tp_.rank()) + " of " +
                std::to_string(tp_.size()));
  if (cfg_.shape_only)
    throw Error("preset '" + cfg_.name +
                "' is a published shape for sizing only and is not "
                "trained here; pick tiny, kjv-small or bench15m");
  if (B <= 0 || T <= 0) throw Error("batch size and sequence length must be positive");
  if (T > cfg_.max_seq_len)
    throw Error("sequence length " + std::to_string(T) + " exceeds the model's max_seq_len " +
                std::to_string(cfg_.max_seq_len));
  N_ = B * T;
  C_ = cfg_.dim, H_ = shard.local_heads(cfg_), KVH_ = shard.local_kv_heads(cfg_);
  D_ = cfg_.head_dim(), F_ = shard.local_ffn(cfg_), V_ = shard.local_vocab(cfg_);
  QKV_ = (H_ + 2 * KVH_) * D_, v0_ = shard.vocab_begin(cfg_);
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

  arena_.plan([&](auto&& take) {
    res_.assign(L + 1, nullptr);
    acts_.assign(L, {});
    for (int l = 0; l <= L; ++l) res_[l] = take(N_ * C_);
    for (auto& a : acts_) {
      a.ln1 = take(N_ * C_), a.rstd1 = take(N_), a.qkv = take(N_ * QKV_);
      a.att = take(B_ * H_ * T_ * T_), a.atty = take(N_ * H_ * D_), a.res_mid = take(N_ * C_);
      a.ln2 = take(N_ * C_), a.rstd2 = take(N_), a.gu = take(N_ * 2 * F_), a.act = take(N_ * F_);
    }
    lnf_ = take(N_ * C_), rstdf_ = take(N_), logits_ = take(N_ * V_), ce_stats_ = take(2 * N_);
    ce_part_ = take(2 * N_), ce_max_ = take(N_);
    losses_ = take(N_), cos_ = take(T_ * D_ / 2), sin_ = take(T_ * D_ / 2);
    dres_ = take(N_ * C_), dln_ = take(N_ * C_), dqkv_ = take(N_ * QKV_);
    datty_ = take(N_ * H_ * D_), dgu_ = take(N_ * 2 * F_), dact_ = take(N_ * F_);
  });
  rope_table(cos_, sin_, T_, D_, cfg_.rope_theta);
  tokens_.resize(N_);
  targets_.resize(N_);
}

void Llama::tp_sum(float* x, int64_t n) {
  if (tp_.size() == 1) return;
  const double t0 = now();
  tp_.all_reduce(x, n);
  const double dt = now() - t0;
  stats_.comm_s += dt, stats_.exposed_s += dt, ++stats_.all_reduces;
}

void Llama::column_parallel_backward(float* dx, float* dw, const float* dy, const float* x,
                                     const float* w, int64_t I, int64_t O) {
  gemm(false, false, N_, I, O, 1.0f, dy, O, w, I, 0.0f, dx, I);  // dx (N, I) = dy · w
  if (tp_.size() == 1) {
    gemm(true, false, O, I, N_, 1.0f, dy, O, x, I, 1.0f, dw, I);
    return;
  }
  const double t0 = now();
  comm::Request req = tp_.iall_reduce(dx, N_ * I);
  double done_at = 0;
  // The weight gradient in blocks; between blocks, MPI gets the chance to progress the sum.
  linear_backward_weight(dw, dy, x, N_, I, O, 4, [&] {
    if (done_at == 0 && req.test()) done_at = now();
  });
  const double t1 = now();
  req.wait();
  const double t2 = now();
  if (done_at == 0) done_at = t2;
  stats_.comm_s += done_at - t0, stats_.exposed_s += t2 - t1, ++stats_.all_reduces;
}

void Llama::check_ids(const int32_t* ids, bool targets) const {
  for (int64_t n = 0; n < N_; ++n) {
    const int32_t id = ids[n];
    if (targets && id == kIgnoreIndex) continue;
    if (id < 0 || id >= cfg_.vocab_size)
      throw Error(std::string(targets ? "target" : "token") + " id " + std::to_string(id) +
                  " at batch row " + std::to_string(n / T_) + ", position " +
                  std::to_string(n % T_) + " is outside the vocabulary [0, " +
                  std::to_string(cfg_.vocab_size) +
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
  const bool adds_residual = tp_.rank() == 0;  // the residual enters the sum over ranks once
  // out (N, C) = (rank 0: residual, others: 0) + x (N, K) · w (C, K)ᵀ, summed over the ranks:
  // the row-parallel GEMM and its forward all-reduce.
  auto row_parallel = [&](float* out, const float* residual, const float* x, const float* w,
                          int64_t K) {
    if (adds_residual)
      std::memcpy(out, residual, N_ * C_ * sizeof(float));
    else
      std::memset(out, 0, N_ * C_ * sizeof(float));
    gemm(false, true, N_, C_, K, 1.0f, x, K, w, K, 1.0f, out, C_);
    tp_sum(out, N_ * C_);
  };

  embedding_forward(res_[0], tokens_.data(), W + off_embed_, N_, C_, v0_, V_);  // (N, C)
  tp_sum(res_[0], N_ * C_);  // each token's row comes from the rank that holds it
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const LayerActs& a = acts_[l];
    const LayerParams& p = lp_[l];
    rmsnorm_forward(a.ln1, a.rstd1, res_[l], W + p.ln1, N_, C_, cfg_.norm_eps);
    linear_forward(a.qkv, a.ln1, W + p.wqkv, N_, C_, QKV_);  // (N, QKV) = [q | k | v], local heads
    rope_forward(a.qkv, cos_, sin_, B_, T_, H_, D_, QKV_);
    rope_forward(a.qkv + HD, cos_, sin_, B_, T_, KVH_, D_, QKV_);
    attention_forward(a.atty, a.att, a.qkv, a.qkv + HD, a.qkv + HD + KVD, ad);
    row_parallel(a.res_mid, res_[l], a.atty, W + p.wo, HD);  // res_mid = res + attn · Woᵀ
    rmsnorm_forward(a.ln2, a.rstd2, a.res_mid, W + p.ln2, N_, C_, cfg_.norm_eps);
    linear_forward(a.gu, a.ln2, W + p.wgu, N_, C_, 2 * F_);  // (N, 2F) = [gate | up], local
    swiglu_forward(a.act, a.gu, N_, F_);
    row_parallel(res_[l + 1], a.res_mid, a.act, W + p.wdown, F_);
  }
  rmsnorm_forward(lnf_, rstdf_, res_[cfg_.n_layers], W + off_norm_, N_, C_, cfg_.norm_eps);
  linear_forward(logits_, lnf_, W + off_head_, N_, C_, V_);  // (N, V/tp): this rank's columns
  if (tp_.size() == 1) {
    cross_entropy_forward(losses_, ce_stats_, logits_, targets_.data(), N_, V_);
  } else {  // vocabulary-parallel: row maxima, then sums of exponentials and target logits
    cross_entropy_local_max(ce_max_, logits_, N_, V_);
    const double t0 = now();
    tp_.all_reduce(ce_max_, N_, comm::DataType::F32, comm::ReduceOp::Max);
    stats_.comm_s += now() - t0, stats_.exposed_s += now() - t0, ++stats_.all_reduces;
    cross_entropy_local_sums(ce_part_, logits_, ce_max_, targets_.data(), N_, V_, v0_);
    tp_sum(ce_part_, 2 * N_);
    cross_entropy_finish(losses_, ce_stats_, ce_max_, ce_part_, targets_.data(), N_);
  }

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

  cross_entropy_backward(logits_, logits_, ce_stats_, targets_.data(), grad_scale, N_, V_,
                         v0_);  // in place
  // The head is column-parallel over the vocabulary.
  column_parallel_backward(dln_, G + off_head_, logits_, lnf_, W + off_head_, C_, V_);
  rmsnorm_backward(dres_, G + off_norm_, dln_, res_[L], W + off_norm_, rstdf_, N_, C_);
  // With a tied head the embedding (offset 0) is still to be completed; the layout keeps the
  // final norm and an untied head after every layer.
  final_from(off_norm_);
  for (int l = L - 1; l >= 0; --l) {
    const LayerActs& a = acts_[l];
    const LayerParams& p = lp_[l];
    // res[l+1] = res_mid + act · Wdownᵀ: dres flows on unchanged to res_mid. Row-parallel:
    // each rank's slice of act gets its gradient without communication.
    linear_backward(dact_, G + p.wdown, dres_, a.act, W + p.wdown, N_, F_, C_);
    swiglu_backward(dgu_, dact_, a.gu, N_, F_);
    column_parallel_backward(dln_, G + p.wgu, dgu_, a.ln2, W + p.wgu, C_, 2 * F_);
    rmsnorm_backward(dres_, G + p.ln2, dln_, a.res_mid, W + p.ln2, a.rstd2, N_, C_, true);
    // res_mid = res[l] + atty · Woᵀ
    linear_backward(datty_, G + p.wo, dres_, a.atty, W + p.wo, N_, HD, C_);
    attention_backward(dqkv_, dqkv_ + HD, dqkv_ + HD + KVD, datty_, a.att, a.qkv, a.qkv + HD,
                       a.qkv + HD + KVD, ad);
    rope_backward(dqkv_, cos_, sin_, B_, T_, H_, D_, QKV_);
    rope_backward(dqkv_ + HD, cos_, sin_, B_, T_, KVH_, D_, QKV_);
    column_parallel_backward(dln_, G + p.wqkv, dqkv_, a.ln1, W + p.wqkv, C_, QKV_);
    rmsnorm_backward(dres_, G + p.ln1, dln_, res_[l], W + p.ln1, a.rstd1, N_, C_, true);
    final_from(p.ln1);
  }
  embedding_backward(G + off_embed_, dres_, tokens_.data(), N_, C_, v0_, V_);
  final_from(0);
}

}  // namespace parallama
