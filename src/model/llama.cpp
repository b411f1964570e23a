#include "model/llama.h"

#include <chrono>
#include <cstring>
#include <string>

#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/flash_attention.h"
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

struct Llama::Slot {
  Arena arena;
  int micro = -1;           // the micro-batch whose activations these are; -1: free
  std::vector<float*> res;  // layers + 1 residual streams (N, C): each layer's input, then output
  std::vector<LayerActs> acts;
  float *lnf = nullptr, *rstdf = nullptr, *logits = nullptr, *ce_stats = nullptr /* (N, 2) */;
  float *ce_part = nullptr /* (N, 2) */, *ce_max = nullptr, *losses = nullptr;
  std::vector<int32_t> tokens, targets;
};

Recompute parse_recompute(const std::string& name) {
  if (name == "none") return Recompute::none;
  if (name == "attention") return Recompute::attention;
  if (name == "full") return Recompute::full;
  throw Error("unknown train.recompute '" + name + "' (choose none, attention or full)");
}

const char* recompute_name(Recompute r) {
  return r == Recompute::full ? "full" : r == Recompute::attention ? "attention" : "none";
}

Llama::Llama(const ParamLayout& layout, int64_t B, int64_t T, comm::Group tp, Recompute recompute)
    : cfg_(layout.config()), tp_(std::move(tp)), B_(B), T_(T), recompute_(recompute) {
  const ModelShard& shard = layout.shard();
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

  if (shard.has_embedding) off_embed_ = layout.find("model.embed_tokens.weight").offset;
  if (shard.has_head) {
    off_norm_ = layout.find("model.norm.weight").offset;
    // A tied head is the embedding table (on a last stage: its copy of it).
    off_head_ =
        layout.find(cfg_.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight").offset;
  }
  const auto ranges = shard.chunks();
  for (size_t c = 0; c < ranges.size(); ++c) {
    Chunk ch;
    ch.first = static_cast<int>(lp_.size());
    for (int l = ranges[c].first; l < ranges[c].second; ++l) {
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
    ch.last = static_cast<int>(lp_.size());
    ch.embedding = c == 0 && shard.has_embedding;
    ch.head = c + 1 == ranges.size() && shard.has_head;
    chunks_.push_back(ch);
  }
  slots_.resize(chunks_.size());

  scratch_.plan([&](auto&& take) {
    LayerActs& a = shared_;
    if (recompute_ == Recompute::full) {
      a.ln1 = take(N_ * C_), a.rstd1 = take(N_), a.qkv = take(N_ * QKV_);
      a.res_mid = take(N_ * C_);
      a.ln2 = take(N_ * C_), a.rstd2 = take(N_), a.gu = take(N_ * 2 * F_), a.act = take(N_ * F_);
    }
    if (recompute_ != Recompute::none) a.lse = take(B_ * H_ * T_), a.atty = take(N_ * H_ * D_);
    cos_ = take(T_ * D_ / 2), sin_ = take(T_ * D_ / 2);
    dres_ = take(N_ * C_), dln_ = take(N_ * C_), dqkv_ = take(N_ * QKV_);
    datty_ = take(N_ * H_ * D_), dgu_ = take(N_ * 2 * F_), dact_ = take(N_ * F_);
  });
  rope_table(cos_, sin_, T_, D_, cfg_.rope_theta);
  for (int c = 0; c < num_chunks(); ++c) release(acquire(c, 0));  // one slot each up front
  reset_peak();
}

Llama::~Llama() = default;

Llama::Slot& Llama::acquire(int c, int micro) {
  for (auto& s : slots_[c])
    if (s->micro == micro)
      throw Error("internal: micro-batch " + std::to_string(micro) + " is already in chunk " +
                  std::to_string(c));
  Slot* slot = nullptr;
  for (auto& s : slots_[c])
    if (s->micro < 0) slot = s.get();
  if (!slot) {  // a new slot: this chunk's layers, plus the head's buffers for the head chunk
    const Chunk& ch = chunks_[c];
    auto owned = std::make_unique<Slot>();
    Slot& s = *owned;
    const int nl = ch.last - ch.first;
    s.arena.plan([&](auto&& take) {
      s.res.assign(nl + 1, nullptr);
      s.acts.assign(recompute_ == Recompute::full ? 0 : nl, {});
      for (int l = 0; l <= nl; ++l) s.res[l] = take(N_ * C_);
      for (auto& a : s.acts) {  // with attention recompute, its output and lse are shared
        a.ln1 = take(N_ * C_), a.rstd1 = take(N_), a.qkv = take(N_ * QKV_);
        if (recompute_ == Recompute::none) a.lse = take(B_ * H_ * T_), a.atty = take(N_ * H_ * D_);
        a.res_mid = take(N_ * C_);
        a.ln2 = take(N_ * C_), a.rstd2 = take(N_), a.gu = take(N_ * 2 * F_);
        a.act = take(N_ * F_);
      }
      if (ch.head) {
        s.lnf = take(N_ * C_), s.rstdf = take(N_), s.logits = take(N_ * V_);
        s.ce_stats = take(2 * N_), s.ce_part = take(2 * N_), s.ce_max = take(N_);
        s.losses = take(N_);
      }
    });
    s.tokens.resize(N_);
    s.targets.resize(N_);
    slots_[c].push_back(std::move(owned));
    slot = &s;
  }
  slot->micro = micro;
  held_bytes_ += slot->arena.floats() * sizeof(float);
  peak_bytes_ = std::max(peak_bytes_, held_bytes_);
  peak_in_flight_ = std::max(peak_in_flight_, ++in_flight_);
  return *slot;
}

void Llama::release(Slot& s) {
  s.micro = -1;
  held_bytes_ -= s.arena.floats() * sizeof(float);
  --in_flight_;
}

void Llama::discard_chunk(int c, int micro) {
  release(find(c, micro));
}

Llama::Slot& Llama::find(int c, int micro) {
  for (auto& s : slots_[c])
    if (s->micro == micro) return *s;
  throw Error("internal: backward of micro-batch " + std::to_string(micro) + " in chunk " +
              std::to_string(c) + " before its forward");
}

size_t Llama::activation_bytes() const {
  size_t n = scratch_.floats() * sizeof(float);
  for (const auto& pool : slots_)
    for (const auto& s : pool) n += s->arena.floats() * sizeof(float);
  return n;
}

void Llama::reset_peak() {
  peak_in_flight_ = in_flight_;
  peak_bytes_ = held_bytes_;
}

const float* Llama::logits() const {
  return last_logits_;
}

void Llama::tp_reduce(float* x, int64_t n, comm::ReduceOp op) {
  if (tp_.size() == 1) return;
  const double t0 = now();
  tp_.all_reduce(x, n, comm::DataType::F32, op);
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
  if (num_chunks() != 1 || !chunks_[0].embedding || !chunks_[0].head)
    throw Error("internal: forward() runs a whole model; a pipeline stage runs forward_chunk()");
  for (auto& s : slots_[0])  // a forward without backward (evaluation) leaves its slot behind
    if (s->micro == 0) release(*s);
  forward_chunk(params, 0, 0, tokens, targets, nullptr);
  return valid_ ? static_cast<float>(loss_sum_ / valid_) : 0.0f;
}

void Llama::backward(const ParamBuffer& params, ParamBuffer& grads, float grad_scale,
                     const std::function<void(int64_t)>& on_final) {
  backward_chunk(params, grads, 0, 0, grad_scale, nullptr, on_final);
}

const float* Llama::forward_chunk(const ParamBuffer& params, int c, int micro,
                                  const int32_t* tokens, const int32_t* targets, const float* in) {
  const Chunk& ch = chunks_[c];
  if (ch.embedding) check_ids(tokens, false);
  if (ch.head) check_ids(targets, true);
  Slot& s = acquire(c, micro);
  std::memcpy(s.tokens.data(), tokens, N_ * sizeof(int32_t));
  std::memcpy(s.targets.data(), targets, N_ * sizeof(int32_t));
  const float* W = params.data();
  if (ch.embedding) {
    embedding_forward(s.res[0], s.tokens.data(), W + off_embed_, N_, C_, v0_, V_);  // (N, C)
    tp_reduce(s.res[0], N_ * C_);  // each token's row comes from the rank that holds it
  } else {
    std::memcpy(s.res[0], in, N_ * C_ * sizeof(float));  // the previous stage's output
  }
  for (int i = 0; i < ch.last - ch.first; ++i)
    layer_forward(acts_of(s, i), lp_[ch.first + i], s.res[i], s.res[i + 1], W);
  if (!ch.head) return s.res[ch.last - ch.first];
  head_forward(s, W);
  return nullptr;
}

Llama::LayerActs Llama::acts_of(const Slot& s, int i) const {
  if (recompute_ == Recompute::full) return shared_;
  LayerActs a = s.acts[i];
  if (recompute_ == Recompute::attention) a.lse = shared_.lse, a.atty = shared_.atty;
  return a;
}

void Llama::layer_forward(const LayerActs& a, const LayerParams& p, const float* x, float* out,
                          const float* W) {
  const AttnDims ad{B_, T_, H_, KVH_, D_, QKV_, QKV_};
  const int64_t HD = H_ * D_, KVD = KVH_ * D_;
  const bool adds_residual = tp_.rank() == 0;  // the residual enters the sum over ranks once
  // y (N, C) = (rank 0: residual, others: 0) + v (N, K) · w (C, K)ᵀ, summed over the ranks:
  // the row-parallel GEMM and its forward all-reduce.
  auto row_parallel = [&](float* y, const float* residual, const float* v, const float* w,
                          int64_t K) {
    if (adds_residual)
      std::memcpy(y, residual, N_ * C_ * sizeof(float));
    else
      std::memset(y, 0, N_ * C_ * sizeof(float));
    gemm(false, true, N_, C_, K, 1.0f, v, K, w, K, 1.0f, y, C_);
    tp_reduce(y, N_ * C_);
  };
  rmsnorm_forward(a.ln1, a.rstd1, x, W + p.ln1, N_, C_, cfg_.norm_eps);
  linear_forward(a.qkv, a.ln1, W + p.wqkv, N_, C_, QKV_);  // (N, QKV) = [q | k | v], local heads
  rope_forward(a.qkv, cos_, sin_, B_, T_, H_, D_, QKV_);
  rope_forward(a.qkv + HD, cos_, sin_, B_, T_, KVH_, D_, QKV_);
  flash_attention_forward(a.atty, a.lse, a.qkv, a.qkv + HD, a.qkv + HD + KVD, ad);
  row_parallel(a.res_mid, x, a.atty, W + p.wo, HD);  // res_mid = x + attn · Woᵀ
  rmsnorm_forward(a.ln2, a.rstd2, a.res_mid, W + p.ln2, N_, C_, cfg_.norm_eps);
  linear_forward(a.gu, a.ln2, W + p.wgu, N_, C_, 2 * F_);  // (N, 2F) = [gate | up], local
  swiglu_forward(a.act, a.gu, N_, F_);
  if (out) row_parallel(out, a.res_mid, a.act, W + p.wdown, F_);
}

void Llama::head_forward(Slot& s, const float* W) {
  rmsnorm_forward(s.lnf, s.rstdf, s.res.back(), W + off_norm_, N_, C_, cfg_.norm_eps);
  linear_forward(s.logits, s.lnf, W + off_head_, N_, C_, V_);  // (N, V/tp): this rank's columns
  if (tp_.size() == 1) {
    cross_entropy_forward(s.losses, s.ce_stats, s.logits, s.targets.data(), N_, V_);
  } else {  // vocabulary-parallel: row maxima, then sums of exponentials and target logits
    cross_entropy_local_max(s.ce_max, s.logits, N_, V_);
    tp_reduce(s.ce_max, N_, comm::ReduceOp::Max);
    cross_entropy_local_sums(s.ce_part, s.logits, s.ce_max, s.targets.data(), N_, V_, v0_);
    tp_reduce(s.ce_part, 2 * N_);
    cross_entropy_finish(s.losses, s.ce_stats, s.ce_max, s.ce_part, s.targets.data(), N_);
  }
  last_logits_ = s.logits;
  valid_ = 0;
  loss_sum_ = 0.0;
  for (int64_t n = 0; n < N_; ++n) {
    if (s.targets[n] == kIgnoreIndex) continue;
    ++valid_;
    loss_sum_ += s.losses[n];
  }
}

const float* Llama::backward_chunk(const ParamBuffer& params, ParamBuffer& grads, int c, int micro,
                                   float grad_scale, const float* dout,
                                   const std::function<void(int64_t)>& on_final) {
  auto final_from = [&](int64_t offset) {
    if (on_final) on_final(offset);
  };
  const Chunk& ch = chunks_[c];
  Slot& s = find(c, micro);
  const float* W = params.data();
  float* G = grads.data();
  const AttnDims ad{B_, T_, H_, KVH_, D_, QKV_, QKV_};
  const int64_t HD = H_ * D_, KVD = KVH_ * D_;

  if (ch.head) {
    cross_entropy_backward(s.logits, s.logits, s.ce_stats, s.targets.data(), grad_scale, N_, V_,
                           v0_);  // in place
    // The head is column-parallel over the vocabulary.
    column_parallel_backward(dln_, G + off_head_, s.logits, s.lnf, W + off_head_, C_, V_);
    rmsnorm_backward(dres_, G + off_norm_, dln_, s.res.back(), W + off_norm_, s.rstdf, N_, C_);
    // The layout keeps the final norm and the head (untied, or a last stage's tied copy) after
    // every layer; a tied embedding at offset 0 is completed last.
    final_from(off_norm_);
  } else {
    std::memcpy(dres_, dout, N_ * C_ * sizeof(float));  // the next stage's input gradient
  }
  for (int i = ch.last - ch.first - 1; i >= 0; --i) {
    const LayerActs a = acts_of(s, i);
    const LayerParams& p = lp_[ch.first + i];
    if (recompute_ == Recompute::full)  // the layer again, from its input
      layer_forward(a, p, s.res[i], nullptr, W);
    else if (recompute_ == Recompute::attention)  // the attention output and its lse again
      flash_attention_forward(a.atty, a.lse, a.qkv, a.qkv + HD, a.qkv + HD + KVD, ad);
    // res[l+1] = res_mid + act · Wdownᵀ: dres flows on unchanged to res_mid. Row-parallel:
    // each rank's slice of act gets its gradient without communication.
    linear_backward(dact_, G + p.wdown, dres_, a.act, W + p.wdown, N_, F_, C_);
    swiglu_backward(dgu_, dact_, a.gu, N_, F_);
    column_parallel_backward(dln_, G + p.wgu, dgu_, a.ln2, W + p.wgu, C_, 2 * F_);
    rmsnorm_backward(dres_, G + p.ln2, dln_, a.res_mid, W + p.ln2, a.rstd2, N_, C_, true);
    // res_mid = res[l] + atty · Woᵀ
    linear_backward(datty_, G + p.wo, dres_, a.atty, W + p.wo, N_, HD, C_);
    flash_attention_backward(dqkv_, dqkv_ + HD, dqkv_ + HD + KVD, datty_, a.atty, a.lse, a.qkv,
                             a.qkv + HD, a.qkv + HD + KVD, ad);
    rope_backward(dqkv_, cos_, sin_, B_, T_, H_, D_, QKV_);
    rope_backward(dqkv_ + HD, cos_, sin_, B_, T_, KVH_, D_, QKV_);
    column_parallel_backward(dln_, G + p.wqkv, dqkv_, a.ln1, W + p.wqkv, C_, QKV_);
    rmsnorm_backward(dres_, G + p.ln1, dln_, s.res[i], W + p.ln1, a.rstd1, N_, C_, true);
    final_from(p.ln1);
  }
  const float* din = dres_;
  if (ch.embedding) {
    embedding_backward(G + off_embed_, dres_, s.tokens.data(), N_, C_, v0_, V_);
    final_from(0);
    din = nullptr;
  }
  release(s);
  return din;
}

}  // namespace parallama
