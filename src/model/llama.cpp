#include "model/llama.h"

#include <omp.h>

#include <chrono>
#include <cstring>
#include <optional>
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
#include "tensor/profile.h"

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
  uint16_t* lnfh = nullptr;  // mixed precision: the final norm's output in 16 bits (lnf null)
  float *ce_part = nullptr /* (N, 2) */, *ce_max = nullptr, *losses = nullptr;
  bool exps = false;  // logits holds exp(logit − max) from cross_entropy_forward_exps
  // bf16 training: logits' first half holds softmax − onehot in bf16 from
  // cross_entropy_forward_grad_lowp; the backward scales its products by dloss.
  uint16_t* dlogits = nullptr;
  std::vector<int32_t> tokens, targets;
};

namespace {
// Arena floats for n 16-bit values.
size_t halves(int64_t n) {
  return static_cast<size_t>((n + 1) / 2);
}
uint16_t* as_half(float* p) {
  return reinterpret_cast<uint16_t*>(p);
}
}  // namespace

Llama::Llama(const ParamLayout& layout, int64_t B, int64_t T, comm::Group tp, Recompute recompute,
             Precision precision)
    : cfg_(layout.config()),
      tp_(std::move(tp)),
      B_(B),
      T_(T),
      recompute_(recompute),
      precision_(precision),
      lowp_(precision != Precision::fp32),
      lp_type_(precision == Precision::fp32 ? DType::BF16 : operand_dtype(precision)),
      attn_bf16_(precision == Precision::bf16 && flash_attention_bf16_available()) {
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
    if (recompute_ == Recompute::full) take_layer(a, take, false);
    if (recompute_ != Recompute::none) a.lse = take(B_ * H_ * T_), a.atty = take(N_ * H_ * D_);
    cos_ = take(T_ * D_ / 2), sin_ = take(T_ * D_ / 2);
    dres_ = take(N_ * C_), dln_ = take(N_ * C_), dqkv_ = take(N_ * QKV_);
    datty_ = take(N_ * H_ * D_), dgu_ = take(N_ * 2 * F_), dact_ = take(N_ * F_);
    if (lowp_) {  // 16-bit operands of the GEMMs
      const int64_t widest = std::max({C_, 2 * F_, QKV_, H_ * D_});
      xh_ = as_half(take(halves(N_ * H_ * D_)));
      dyh_ = as_half(take(halves(N_ * widest)));
    }
  });
  if (lowp_) wlp_.resize(static_cast<size_t>(layout.total()));
  rope_table(cos_, sin_, T_, D_, cfg_.rope_theta, 0, cfg_.rope_scaling);
  for (int c = 0; c < num_chunks(); ++c) release(acquire(c, 0));  // one slot each up front
  reset_peak();
}

Llama::~Llama() = default;

template <class Take>
void Llama::take_layer(LayerActs& a, Take&& take, bool attention) const {
  a = {};
  auto act = [&](float*& f, uint16_t*& h, int64_t n) {  // a GEMM-only activation
    if (lowp_)
      h = as_half(take(halves(n)));
    else
      f = take(n);
  };
  act(a.ln1, a.ln1h, N_ * C_);
  a.rstd1 = take(N_), a.qkv = take(N_ * QKV_);
  if (attention) {
    a.lse = take(B_ * H_ * T_), a.atty = take(N_ * H_ * D_);
    // rounded once in the forward, for the output projection's forward and weight gradient
    if (lowp_) a.attyh = as_half(take(halves(N_ * H_ * D_)));
  }
  a.res_mid = take(N_ * C_);
  act(a.ln2, a.ln2h, N_ * C_);
  a.rstd2 = take(N_), a.gu = take(N_ * 2 * F_);
  act(a.act, a.acth, N_ * F_);
}

void Llama::mm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, Op a, int64_t lda, Op b,
               int64_t ldb, float beta, float* c, int64_t ldc, float alpha) const {
  if (lowp_ && lp_type_ == DType::BF16 && b.weight >= 0 && !ta) {
    Packed& p = packed_[{b.weight, tb}];
    const bool acc = beta != 0.0f;
    if (acc && alpha != 1.0f) throw Error("internal: a packed product scales only when it sets c");
    if (!p.gemm || !p.gemm->matches(tb, M, N, K, lda, ldb, ldc, acc))
      p.gemm = std::make_unique<PackedGemm>(tb, M, N, K, lda, ldb, ldc, acc), p.version = ~0ull;
    if (p.version != weights_version_) p.gemm->pack(b.h), p.version = weights_version_;
    p.gemm->run(a.h, c);
    if (alpha != 1.0f) {
      prof::KindScope scope(prof::Kind::other);
#pragma omp parallel for schedule(static) if (M * N > (int64_t{1} << 16))
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) c[i * ldc + j] *= alpha;
    }
  } else if (lowp_) {
    gemm_lp(lp_type_, ta, tb, M, N, K, a.h, lda, b.h, ldb, beta, c, ldc, alpha);
  } else
    gemm(ta, tb, M, N, K, alpha, a.f, lda, b.f, ldb, beta, c, ldc);
}

void Llama::linear_grads(float* dx, float* dw, Op dy, Op x, Op w, int64_t I, int64_t O) const {
  mm(false, false, N_, I, O, dy, O, w, I, 0.0f, dx, I);  // dx (N, I) = dy (N, O) · w (O, I)
  mm(true, false, O, I, N_, dy, O, x, I, 1.0f, dw, I);   // dw (O, I) += dyᵀ · x (N, I)
}

Llama::Op Llama::weight(int64_t offset, const float* W) const {
  return lowp_ ? Op{nullptr, wlp_.data() + offset, offset} : Op{W + offset, nullptr};
}

Llama::Op Llama::norm_backward(float* dw, const float* x, const float* w, const float* rstd,
                               bool accumulate, bool feeds_gemm) {
  if (!lowp_ || !feeds_gemm) {
    rmsnorm_backward(dres_, dw, dln_, x, w, rstd, N_, C_, accumulate);
    return {dres_, nullptr};
  }
  rmsnorm_backward_lowp(lp_type_, dyh_, dres_, dw, dln_, x, w, rstd, N_, C_, accumulate);
  return {nullptr, dyh_};
}

Llama::Op Llama::operand(const float* x, int64_t n, uint16_t* into) const {
  if (!lowp_) return {x, nullptr};
  to_lowp(lp_type_, into, x, n);
  return {nullptr, into};
}

void Llama::refresh_weights(const ParamBuffer& params) {
  const float* W = params.data();
  auto copy = [&](int64_t off, int64_t n) { to_lowp(lp_type_, wlp_.data() + off, W + off, n); };
  const int64_t HD = H_ * D_;
  for (const LayerParams& p : lp_) {
    copy(p.wqkv, QKV_ * C_), copy(p.wo, C_ * HD);
    copy(p.wgu, 2 * F_ * C_), copy(p.wdown, C_ * F_);
  }
  if (off_head_ >= 0) copy(off_head_, V_ * C_);
  ++weights_version_;  // every packed copy is now stale
}

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
      // With attention recompute, its output and lse are shared.
      for (auto& a : s.acts) take_layer(a, take, recompute_ == Recompute::none);
      if (ch.head) {
        if (lowp_)
          s.lnfh = as_half(take(halves(N_ * C_)));
        else
          s.lnf = take(N_ * C_);
        s.rstdf = take(N_), s.logits = take(N_ * V_);
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
  tp_.all_reduce(x, n, DType::F32, op);
  const double dt = now() - t0;
  stats_.comm_s += dt, stats_.exposed_s += dt, ++stats_.all_reduces;
}

void Llama::column_parallel_backward(float* dx, float* dw, Op dy, Op x, Op w, int64_t I, int64_t O,
                                     float alpha, const std::function<void()>& dw_done) {
  // The weight gradient dw (O, I) += dyᵀ · x in blocks of its rows: oneDNN reads dyᵀ faster a few
  // thousand rows at a time (bench15m's head, 32000 rows: 25% less time in bf16, 10% in fp32,
  // measured alone). With tensor parallelism, MPI gets the chance to progress the sum of dx
  // between blocks.
  constexpr int64_t kRows = 4096;
  const int64_t blocks = std::max<int64_t>(tp_.size() > 1 ? 4 : 1, (O + kRows - 1) / kRows);
  const int64_t block = (O + blocks - 1) / blocks;
  auto dw_rows = [&](int64_t o0) {
    mm(true, false, std::min(block, O - o0), I, N_, dy.at(o0), O, x, I, 1.0f, dw + o0 * I, I,
       alpha);
  };
  if (tp_.size() == 1) {
    // The weight gradient first: the caller can send it (data parallelism) while dx computes.
    for (int64_t o0 = 0; o0 < O; o0 += block) dw_rows(o0);
    if (dw_done) dw_done();
    mm(false, false, N_, I, O, dy, O, w, I, 0.0f, dx, I, alpha);  // dx (N, I) = alpha · dy · w
    return;
  }
  mm(false, false, N_, I, O, dy, O, w, I, 0.0f, dx, I, alpha);  // dx (N, I) = alpha · dy · w
  const double t0 = now();
  comm::Request req = tp_.iall_reduce(dx, N_ * I);
  double done_at = 0;
  for (int64_t o0 = 0; o0 < O; o0 += block) {
    dw_rows(o0);
    if (done_at == 0 && req.test()) done_at = now();
  }
  if (dw_done) dw_done();
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

float Llama::forward(const ParamBuffer& params, const int32_t* tokens, const int32_t* targets,
                     bool backward_follows) {
  if (num_chunks() != 1 || !chunks_[0].embedding || !chunks_[0].head)
    throw Error("internal: forward() runs a whole model; a pipeline stage runs forward_chunk()");
  for (auto& s : slots_[0])  // a forward without backward (evaluation) leaves its slot behind
    if (s->micro == 0) release(*s);
  run_chunk(params, 0, 0, tokens, targets, nullptr, !backward_follows);
  return valid_ ? static_cast<float>(loss_sum_ / valid_) : 0.0f;
}

void Llama::backward(const ParamBuffer& params, ParamBuffer& grads, float grad_scale,
                     const std::function<void(int64_t)>& on_final) {
  backward_chunk(params, grads, 0, 0, grad_scale, nullptr, on_final);
}

const float* Llama::forward_chunk(const ParamBuffer& params, int c, int micro,
                                  const int32_t* tokens, const int32_t* targets, const float* in) {
  return run_chunk(params, c, micro, tokens, targets, in, micro == kForwardOnly);
}

const float* Llama::run_chunk(const ParamBuffer& params, int c, int micro, const int32_t* tokens,
                              const int32_t* targets, const float* in, bool keep_logits) {
  const Chunk& ch = chunks_[c];
  if (ch.embedding) check_ids(tokens, false);
  if (ch.head) check_ids(targets, true);
  Slot& s = acquire(c, micro);
  if (lowp_ && c == 0 && (micro == 0 || micro == kForwardOnly)) {  // a step's first forward
    prof::PartScope part(prof::Part::optimizer);  // the weights' copy: part of the update
    refresh_weights(params);
  }
  std::memcpy(s.tokens.data(), tokens, N_ * sizeof(int32_t));
  std::memcpy(s.targets.data(), targets, N_ * sizeof(int32_t));
  const float* W = params.data();
  if (ch.embedding) {
    prof::PartScope part(prof::Part::embedding);
    embedding_forward(s.res[0], s.tokens.data(), W + off_embed_, N_, C_, v0_, V_);  // (N, C)
    tp_reduce(s.res[0], N_ * C_);  // each token's row comes from the rank that holds it
  } else {
    std::memcpy(s.res[0], in, N_ * C_ * sizeof(float));  // the previous stage's output
  }
  for (int i = 0; i < ch.last - ch.first; ++i)
    layer_forward(acts_of(s, i), lp_[ch.first + i], s.res[i], s.res[i + 1], W);
  if (!ch.head) return s.res[ch.last - ch.first];
  prof::PartScope part(prof::Part::head);
  head_forward(s, W, keep_logits);
  return nullptr;
}

Llama::LayerActs Llama::acts_of(const Slot& s, int i) const {
  if (recompute_ == Recompute::full) return shared_;
  LayerActs a = s.acts[i];
  if (recompute_ == Recompute::attention) a.lse = shared_.lse, a.atty = shared_.atty;
  return a;
}

void Llama::layer_forward(const LayerActs& a, const LayerParams& p, const float* x, float* out,
                          const float* W, const Decoding* dec) {
  const int64_t HD = H_ * D_;
  const int64_t N = dec ? dec->first->back() : N_;  // rows: the batch's, or a decode call's
  const bool adds_residual = tp_.rank() == 0;       // the residual enters the sum over ranks once
  // y (N, C) = (rank 0: residual, others: 0) + v (N, K) · w (C, K)ᵀ, summed over the ranks:
  // the row-parallel GEMM and its forward all-reduce.
  auto row_parallel = [&](float* y, const float* residual, Op v, Op w, int64_t K) {
    if (adds_residual)
      std::memcpy(y, residual, N * C_ * sizeof(float));
    else
      std::memset(y, 0, N * C_ * sizeof(float));
    mm(false, true, N, C_, K, v, K, w, K, 1.0f, y, C_);
    tp_reduce(y, N * C_);
  };
  // A norm's output, which only feeds a GEMM: kept in fp32, or only rounded to 16 bits.
  auto norm = [&](float* f, uint16_t* h, float* rstd, const float* in, int64_t w) -> Op {
    if (!lowp_) return rmsnorm_forward(f, rstd, in, W + w, N, C_, cfg_.norm_eps), Op{f, nullptr};
    rmsnorm_forward_lowp(lp_type_, h, rstd, in, W + w, N, C_, cfg_.norm_eps);
    return {nullptr, h};
  };
  std::optional<prof::PartScope> part(prof::Part::attention);
  const Op ln1 = norm(a.ln1, a.ln1h, a.rstd1, x, p.ln1);
  // (N, QKV) = [q | k | v], local heads
  mm(false, true, N, QKV_, C_, ln1, C_, weight(p.wqkv, W), C_, 0.0f, a.qkv, QKV_);
  if (dec) {  // each row at its own position
    const float *c = dec->cache->rcos_.data(), *sn = dec->cache->rsin_.data();
    rope_forward(a.qkv, c, sn, 1, N, H_, D_, QKV_);
    rope_forward(a.qkv + HD, c, sn, 1, N, KVH_, D_, QKV_);
    cached_attention(a, *dec);
  } else {
    rope_forward(a.qkv, cos_, sin_, B_, T_, H_, D_, QKV_);
    rope_forward(a.qkv + HD, cos_, sin_, B_, T_, KVH_, D_, QKV_);
    attention_forward(a);
  }
  // res_mid = x + attn · Woᵀ
  row_parallel(a.res_mid, x, operand(a.atty, N * HD, a.attyh ? a.attyh : xh_), weight(p.wo, W), HD);
  part.reset();
  part.emplace(prof::Part::mlp);
  const Op ln2 = norm(a.ln2, a.ln2h, a.rstd2, a.res_mid, p.ln2);
  // (N, 2F) = [gate | up], local
  mm(false, true, N, 2 * F_, C_, ln2, C_, weight(p.wgu, W), C_, 0.0f, a.gu, 2 * F_);
  Op act{a.act, nullptr};
  if (lowp_)
    swiglu_forward_lowp(lp_type_, a.acth, a.gu, N, F_), act = {nullptr, a.acth};
  else
    swiglu_forward(a.act, a.gu, N, F_);
  if (out) row_parallel(out, a.res_mid, act, weight(p.wdown, W), F_);
}

void Llama::attention_forward(const LayerActs& a) const {
  const AttnDims ad{B_, T_, H_, KVH_, D_, QKV_, QKV_};
  const int64_t HD = H_ * D_, KVD = KVH_ * D_;
  (attn_bf16_ ? flash_attention_forward_bf16 : flash_attention_forward)(
      a.atty, a.lse, a.qkv, a.qkv + HD, a.qkv + HD + KVD, ad);
}

void Llama::attention_backward(const LayerActs& a) const {
  const AttnDims ad{B_, T_, H_, KVH_, D_, QKV_, QKV_};
  const int64_t HD = H_ * D_, KVD = KVH_ * D_;
  (attn_bf16_ ? flash_attention_backward_bf16 : flash_attention_backward)(
      dqkv_, dqkv_ + HD, dqkv_ + HD + KVD, datty_, a.atty, a.lse, a.qkv, a.qkv + HD,
      a.qkv + HD + KVD, ad);
}

void Llama::head_forward(Slot& s, const float* W, bool keep_logits) {
  if (lowp_)  // the final norm's output only feeds the head's products
    rmsnorm_forward_lowp(lp_type_, s.lnfh, s.rstdf, s.res.back(), W + off_norm_, N_, C_,
                         cfg_.norm_eps);
  else
    rmsnorm_forward(s.lnf, s.rstdf, s.res.back(), W + off_norm_, N_, C_, cfg_.norm_eps);
  // (N, V/tp): this rank's columns
  mm(false, true, N_, V_, C_, {s.lnf, s.lnfh}, C_, weight(off_head_, W), C_, 0.0f, s.logits, V_);
  s.exps = tp_.size() == 1 && !keep_logits;
  s.dlogits = nullptr;
  if (s.exps && lowp_ && lp_type_ == DType::BF16) {  // the gradient but for dloss, row by row
    s.dlogits = cross_entropy_forward_grad_lowp(lp_type_, s.losses, s.ce_stats, s.logits,
                                                s.targets.data(), N_, V_);
  } else if (s.exps) {  // the backward's softmax without exponentials of its own
    cross_entropy_forward_exps(s.losses, s.ce_stats, s.logits, s.targets.data(), N_, V_);
  } else if (tp_.size() == 1) {
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
  const int64_t HD = H_ * D_;
  const bool has_layers = ch.last > ch.first;
  Op dres;  // dres_ as the next product's operand

  if (ch.head) {
    prof::PartScope part(prof::Part::head);
    // The logits' gradient, in place; mixed precision: rounded to 16 bits in the same pass.
    const int32_t* tg = s.targets.data();
    Op dlogits{s.logits, nullptr};
    float alpha = 1.0f;  // dloss, where the forward left it out of the 16-bit gradient
    if (s.dlogits)
      dlogits = {nullptr, s.dlogits}, alpha = grad_scale;
    else if (lowp_)
      dlogits = {nullptr, cross_entropy_backward_lowp(lp_type_, s.logits, s.ce_stats, tg,
                                                      grad_scale, N_, V_, v0_, s.exps)};
    else
      cross_entropy_backward(s.logits, s.logits, s.ce_stats, tg, grad_scale, N_, V_, v0_, s.exps);
    // The head is column-parallel over the vocabulary.
    // An untied head (after the final norm in the layout) is final as soon as its weight
    // gradient is: data parallelism sends it while the input gradient computes.
    column_parallel_backward(dln_, G + off_head_, dlogits, {s.lnf, s.lnfh}, weight(off_head_, W),
                             C_, V_, alpha, [&] {
                               if (off_head_ > off_norm_) final_from(off_head_);
                             });
    dres = norm_backward(G + off_norm_, s.res.back(), W + off_norm_, s.rstdf, false, has_layers);
    // The layout keeps the final norm and the head (untied, or a last stage's tied copy) after
    // every layer; a tied embedding at offset 0 is completed last.
    final_from(off_norm_);
  } else {
    std::memcpy(dres_, dout, N_ * C_ * sizeof(float));  // the next stage's input gradient
    if (has_layers) dres = operand(dres_, N_ * C_, dyh_);
  }
  for (int i = ch.last - ch.first - 1; i >= 0; --i) {
    const LayerActs a = acts_of(s, i);
    const LayerParams& p = lp_[ch.first + i];
    if (recompute_ == Recompute::full)  // the layer again, from its input
      layer_forward(a, p, s.res[i], nullptr, W);
    std::optional<prof::PartScope> part(prof::Part::attention);
    if (recompute_ == Recompute::attention)  // the attention output and its lse again
      attention_forward(a);
    part.reset();
    part.emplace(prof::Part::mlp);
    // res[l+1] = res_mid + act · Wdownᵀ: dres flows on unchanged to res_mid. Row-parallel:
    // each rank's slice of act gets its gradient without communication.
    linear_grads(dact_, G + p.wdown, dres, {a.act, a.acth}, weight(p.wdown, W), F_, C_);
    Op dgu{dgu_, nullptr};
    if (lowp_)
      swiglu_backward_lowp(lp_type_, dyh_, dact_, a.gu, N_, F_), dgu = {nullptr, dyh_};
    else
      swiglu_backward(dgu_, dact_, a.gu, N_, F_);
    column_parallel_backward(dln_, G + p.wgu, dgu, {a.ln2, a.ln2h}, weight(p.wgu, W), C_, 2 * F_);
    dres = norm_backward(G + p.ln2, a.res_mid, W + p.ln2, a.rstd2, true, true);
    part.reset();
    part.emplace(prof::Part::attention);
    // res_mid = res[l] + atty · Woᵀ
    const Op atty = a.attyh ? Op{nullptr, a.attyh} : operand(a.atty, N_ * HD, xh_);
    linear_grads(datty_, G + p.wo, dres, atty, weight(p.wo, W), HD, C_);
    attention_backward(a);
    Op dqkv{dqkv_, nullptr};
    if (lowp_) {  // rotated back and rounded for the products, row by row
      rope_backward_lowp(lp_type_, dyh_, dqkv_, cos_, sin_, B_, T_, H_, KVH_, D_, QKV_);
      dqkv = {nullptr, dyh_};
    } else {
      rope_backward(dqkv_, cos_, sin_, B_, T_, H_, D_, QKV_);
      rope_backward(dqkv_ + HD, cos_, sin_, B_, T_, KVH_, D_, QKV_);
    }
    column_parallel_backward(dln_, G + p.wqkv, dqkv, {a.ln1, a.ln1h}, weight(p.wqkv, W), C_, QKV_);
    // (the first layer's input gradient goes to the embedding or the previous stage in fp32)
    dres = norm_backward(G + p.ln1, s.res[i], W + p.ln1, a.rstd1, true, i > 0);
    final_from(p.ln1);
  }
  const float* din = dres_;
  if (ch.embedding) {
    prof::PartScope part(prof::Part::embedding);
    embedding_backward(G + off_embed_, dres_, s.tokens.data(), N_, C_, v0_, V_);
    final_from(0);
    din = nullptr;
  }
  release(s);
  return din;
}

KVCache::KVCache(const Llama& m, int64_t sequences, int64_t capacity)
    : S_(sequences), cap_(capacity), kvd_(m.KVH_ * m.D_) {
  if (sequences < 1 || capacity < 1 || capacity > m.cfg_.max_seq_len)
    throw Error("a KV cache of " + std::to_string(sequences) + " sequences of " +
                std::to_string(capacity) + " positions does not fit a model of max_seq_len " +
                std::to_string(m.cfg_.max_seq_len));
  const auto layers = static_cast<int64_t>(m.lp_.size());
  len_.assign(static_cast<size_t>(S_), 0);
  k_.assign(static_cast<size_t>(layers * S_ * cap_ * kvd_), 0.0f);
  v_.assign(k_.size(), 0.0f);
  const int64_t half = m.D_ / 2, rows = m.N_, S = std::min(rows, S_);
  cos_.resize(static_cast<size_t>(cap_ * half)), sin_.resize(cos_.size());
  rope_table(cos_.data(), sin_.data(), cap_, m.D_, m.cfg_.rope_theta, 0, m.cfg_.rope_scaling);
  rcos_.resize(static_cast<size_t>(rows * half)), rsin_.resize(rcos_.size());
  hin_.resize(static_cast<size_t>(S * m.C_)), hn_.resize(hin_.size()), rstd_.resize(S);
  local_.resize(static_cast<size_t>(S * m.V_));
  if (m.tp_.size() > 1) gathered_.resize(static_cast<size_t>(S * m.cfg_.vocab_size));
  logits_.resize(static_cast<size_t>(S * m.cfg_.vocab_size));
}

void Llama::cached_attention(const LayerActs& a, const Decoding& dec) {
  KVCache& kv = *dec.cache;
  const int64_t HD = H_ * D_, KVD = KVH_ * D_;
  const auto& segs = *dec.segments;
  const auto& first = *dec.first;
  const auto n = static_cast<int64_t>(segs.size());
  for (size_t g = 0; g < segs.size(); ++g) {
    const int64_t past = kv.len_[static_cast<size_t>(segs[g].seq)];
    float *kc = kv.k(dec.layer, segs[g].seq), *vc = kv.v(dec.layer, segs[g].seq);
    for (int64_t r = 0; r < segs[g].count; ++r) {
      const float* src = a.qkv + (first[g] + r) * QKV_ + HD;
      std::memcpy(kc + (past + r) * KVD, src, KVD * sizeof(float));
      std::memcpy(vc + (past + r) * KVD, src + KVD, KVD * sizeof(float));
    }
  }
  // One sequence's attention per task when there are several (each then runs single-threaded
  // inside); one sequence alone spreads its heads over the threads. Either way every row is
  // computed the same way, so the result does not depend on the threads.
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
  for (int64_t g = 0; g < n; ++g) {
    const DecodeSegment& sg = segs[static_cast<size_t>(g)];
    AttnDims ad{1, sg.count, H_, KVH_, D_, QKV_, KVD};
    ad.past = kv.len_[static_cast<size_t>(sg.seq)];
    flash_attention_forward(a.atty + first[g] * HD, nullptr, a.qkv + first[g] * QKV_,
                            kv.k(dec.layer, sg.seq), kv.v(dec.layer, sg.seq), ad);
  }
}

const float* Llama::decode(const ParamBuffer& params, KVCache& kv,
                           const std::vector<DecodeSegment>& segments, const int32_t* tokens) {
  if (num_chunks() != 1 || !chunks_[0].embedding || !chunks_[0].head)
    throw Error("generation runs every layer on each rank (use --pp 1)");
  if (lowp_) throw Error("generation runs in fp32");
  if (kv.kvd_ != KVH_ * D_ || kv.len_.empty() || kv.rcos_.size() != size_t(N_ * D_ / 2))
    throw Error("internal: the KV cache was made for another model");
  const auto S = static_cast<int64_t>(segments.size());
  int64_t rows = 0;
  std::vector<int64_t> first = {0};  // each segment's first row, then the rows in all
  std::vector<char> seen(static_cast<size_t>(kv.S_), 0);
  for (const DecodeSegment& g : segments) {
    if (g.seq < 0 || g.seq >= kv.S_ || seen[static_cast<size_t>(g.seq)] || g.count < 1)
      throw Error("internal: decode segment of sequence " + std::to_string(g.seq) + " with " +
                  std::to_string(g.count) + " tokens");
    seen[static_cast<size_t>(g.seq)] = 1;
    if (kv.len_[static_cast<size_t>(g.seq)] + g.count > kv.cap_)
      throw Error("context is full: " + std::to_string(kv.cap_) + " tokens (max_seq_len " +
                  std::to_string(cfg_.max_seq_len) + ")");
    rows += g.count;
    first.push_back(rows);
  }
  if (S == 0) return nullptr;
  if (rows > N_)
    throw Error("internal: " + std::to_string(rows) + " rows in one decode call; the model takes " +
                std::to_string(N_));
  const size_t half = static_cast<size_t>(D_ / 2);
  size_t at = 0;
  for (const DecodeSegment& g : segments)  // each row's position in the rotary table
    for (int64_t r = 0; r < g.count; ++r, at += half) {
      const size_t pos = static_cast<size_t>(kv.len_[static_cast<size_t>(g.seq)] + r) * half;
      std::memcpy(kv.rcos_.data() + at, kv.cos_.data() + pos, half * sizeof(float));
      std::memcpy(kv.rsin_.data() + at, kv.sin_.data() + pos, half * sizeof(float));
    }
  for (int64_t n = 0; n < rows; ++n)
    if (tokens[n] < 0 || tokens[n] >= cfg_.vocab_size)
      throw Error("token id " + std::to_string(tokens[n]) + " is outside the vocabulary [0, " +
                  std::to_string(cfg_.vocab_size) + ")");
  for (auto& s : slots_[0])  // a forward without backward (evaluation) leaves its slot behind
    if (s->micro == 0) release(*s);
  // At most one thread per row: a decode step of one sequence is a chain of tiny kernels, and
  // more threads than rows spend longer meeting at each kernel's barrier than they save (5× slower
  // with two threads than one, at one row, on a 2-core machine).
  struct Threads {
    int keep = omp_get_max_threads();
    explicit Threads(int64_t rows) {
      if (rows < keep) omp_set_num_threads(static_cast<int>(rows));
    }
    ~Threads() { omp_set_num_threads(keep); }
  } threads(rows);
  Slot& s = acquire(0, 0);
  const float* W = params.data();
  embedding_forward(s.res[0], tokens, W + off_embed_, rows, C_, v0_, V_);  // (rows, C)
  tp_reduce(s.res[0], rows * C_);
  const int nl = static_cast<int>(lp_.size());
  for (int i = 0; i < nl; ++i) {
    const Decoding dec{&kv, &segments, &first, i};
    layer_forward(acts_of(s, i), lp_[i], s.res[i], s.res[i + 1], W, &dec);
  }
  // The head, for the last row of each segment only.
  for (int64_t g = 0; g < S; ++g) {
    const int64_t last = first[static_cast<size_t>(g) + 1] - 1;
    std::memcpy(kv.hin_.data() + g * C_, s.res[nl] + last * C_, C_ * sizeof(float));
    kv.len_[static_cast<size_t>(segments[static_cast<size_t>(g)].seq)] +=
        segments[static_cast<size_t>(g)].count;
  }
  release(s);
  rmsnorm_forward(kv.hn_.data(), kv.rstd_.data(), kv.hin_.data(), W + off_norm_, S, C_,
                  cfg_.norm_eps);
  float* local = tp_.size() == 1 ? kv.logits_.data() : kv.local_.data();
  gemm(false, true, S, V_, C_, 1.0f, kv.hn_.data(), C_, W + off_head_, C_, 0.0f, local, V_);
  if (tp_.size() == 1) return kv.logits_.data();
  // Vocabulary-parallel: rank r's (S, V_r) block, then each row's columns put in order.
  const std::vector<int64_t> vocab = comm::even_counts(cfg_.vocab_size, tp_.size());
  std::vector<int64_t> counts(vocab.size());
  for (size_t r = 0; r < vocab.size(); ++r) counts[r] = S * vocab[r];
  tp_.all_gather(local, kv.gathered_.data(), counts);
  const float* block = kv.gathered_.data();
  int64_t col = 0;
  for (int64_t vr : vocab) {
    for (int64_t g = 0; g < S; ++g)
      std::memcpy(kv.logits_.data() + g * cfg_.vocab_size + col, block + g * vr,
                  vr * sizeof(float));
    block += S * vr, col += vr;
  }
  return kv.logits_.data();
}

}  // namespace parallama
