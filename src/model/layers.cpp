#include "model/layers.h"

#include <cstring>
#include <optional>
#include <string>

#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/flash_attention.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "tensor/error.h"
#include "tensor/profile.h"

namespace parallama {

using namespace kernels;

LocalDims LocalDims::of(const LlamaConfig& cfg, const ModelShard& shard) {
  LocalDims d{};
  d.C = cfg.dim, d.H = shard.local_heads(cfg), d.KVH = shard.local_kv_heads(cfg);
  d.D = cfg.head_dim(), d.F = shard.local_ffn(cfg), d.V = shard.local_vocab(cfg);
  d.QKV = (d.H + 2 * d.KVH) * d.D, d.v0 = shard.vocab_begin(cfg);
  return d;
}

ModelIndex ModelIndex::of(const ParamLayout& layout) {
  const ModelShard& shard = layout.shard();
  const LlamaConfig& cfg = layout.config();
  ModelIndex m;
  if (shard.has_embedding) m.embed = layout.find("model.embed_tokens.weight").offset;
  if (shard.has_head) {
    m.norm = layout.find("model.norm.weight").offset;
    // A tied head is the embedding table (on a last stage: its copy of it).
    m.head =
        layout.find(cfg.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight").offset;
  }
  const auto ranges = shard.chunks();
  for (size_t c = 0; c < ranges.size(); ++c) {
    Chunk ch;
    ch.first = static_cast<int>(m.layers.size());
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
      m.layers.push_back({layout.find(p + "input_layernorm.weight").offset, q.offset,
                          layout.find(p + "self_attn.o_proj.weight").offset,
                          layout.find(p + "post_attention_layernorm.weight").offset, gate.offset,
                          layout.find(p + "mlp.down_proj.weight").offset});
    }
    ch.last = static_cast<int>(m.layers.size());
    ch.embedding = c == 0 && shard.has_embedding;
    ch.head = c + 1 == ranges.size() && shard.has_head;
    m.chunks.push_back(ch);
  }
  return m;
}

std::vector<std::pair<int64_t, int64_t>> ModelIndex::gemm_weights(const LocalDims& d) const {
  std::vector<std::pair<int64_t, int64_t>> w;
  for (const LayerParams& p : layers) {
    w.emplace_back(p.wqkv, d.QKV * d.C), w.emplace_back(p.wo, d.C * d.HD());
    w.emplace_back(p.wgu, 2 * d.F * d.C), w.emplace_back(p.wdown, d.C * d.F);
  }
  if (head >= 0) w.emplace_back(head, d.V * d.C);
  return w;
}

Layers::Layers(const LlamaConfig& cfg, const LocalDims& d, const ModelIndex& index, Operands& ops,
               TensorParallel& tp)
    : cfg_(cfg),
      d_(d),
      index_(index),
      ops_(ops),
      tp_(tp),
      attn_bf16_(ops.precision() == Precision::bf16 && flash_attention_bf16_available()) {}

void Layers::embed(float* x, const int32_t* tokens, int64_t N, const float* W) const {
  embedding_forward(x, tokens, W + index_.embed, N, d_.C, d_.v0, d_.V);  // (N, C)
  tp_.reduce(x, N * d_.C);  // each token's row comes from the rank that holds it
}

void Layers::embed_backward(float* G, const float* dx, const int32_t* tokens, int64_t N) const {
  embedding_backward(G + index_.embed, dx, tokens, N, d_.C, d_.v0, d_.V);
}

Operand Layers::norm(float* f, uint16_t* h, float* rstd, const float* in, const float* w,
                     int64_t N) const {
  // A norm's output, which only feeds a GEMM: kept in fp32, or only rounded to 16 bits.
  if (!ops_.lowp()) return rmsnorm_forward(f, rstd, in, w, N, d_.C, cfg_.norm_eps), Operand{f};
  rmsnorm_forward_lowp(ops_.type(), h, rstd, in, w, N, d_.C, cfg_.norm_eps);
  return {nullptr, h};
}

void Layers::row_parallel(float* y, const float* residual, Operand v, Operand w, int64_t K,
                          int64_t N) const {
  if (tp_.adds_residual())  // the residual enters the sum over ranks once
    std::memcpy(y, residual, N * d_.C * sizeof(float));
  else
    std::memset(y, 0, N * d_.C * sizeof(float));
  ops_.mm(false, true, N, d_.C, K, v, K, w, K, 1.0f, y, d_.C);
  tp_.reduce(y, N * d_.C);
}

void Layers::forward(const LayerActs& a, const LayerParams& p, const float* x, float* out,
                     const float* W, int64_t N, const Attend& attend, uint16_t* xh) const {
  const int64_t C = d_.C, HD = d_.HD(), F = d_.F;
  std::optional<prof::PartScope> part(prof::Part::attention);
  const Operand ln1 = norm(a.ln1, a.ln1h, a.rstd1, x, W + p.ln1, N);
  // (N, QKV) = [q | k | v], local heads
  ops_.mm(false, true, N, d_.QKV, C, ln1, C, ops_.weight(p.wqkv, W), C, 0.0f, a.qkv, d_.QKV);
  attend(a);
  // res_mid = x + attn · Woᵀ
  row_parallel(a.res_mid, x, ops_.operand(a.atty, N * HD, a.attyh ? a.attyh : xh),
               ops_.weight(p.wo, W), HD, N);
  part.reset();
  part.emplace(prof::Part::mlp);
  const Operand ln2 = norm(a.ln2, a.ln2h, a.rstd2, a.res_mid, W + p.ln2, N);
  // (N, 2F) = [gate | up], local
  ops_.mm(false, true, N, 2 * F, C, ln2, C, ops_.weight(p.wgu, W), C, 0.0f, a.gu, 2 * F);
  Operand act{a.act};
  if (ops_.lowp())
    swiglu_forward_lowp(ops_.type(), a.acth, a.gu, N, F), act = {nullptr, a.acth};
  else
    swiglu_forward(a.act, a.gu, N, F);
  if (out) row_parallel(out, a.res_mid, act, ops_.weight(p.wdown, W), F, N);
}

void Layers::attend(const LayerActs& a, const Rows& r, Workspace& ws) const {
  rope_forward(a.qkv, ws.cos, ws.sin, r.B, r.T, d_.H, d_.D, d_.QKV);
  rope_forward(a.qkv + d_.HD(), ws.cos, ws.sin, r.B, r.T, d_.KVH, d_.D, d_.QKV);
  attention_forward(a, r, ws);
}

void Layers::attention_forward(const LayerActs& a, const Rows& r, Workspace& ws) const {
  const AttnDims ad{r.B, r.T, d_.H, d_.KVH, d_.D, d_.QKV, d_.QKV};
  const int64_t HD = d_.HD(), KVD = d_.KVD();
  (attn_bf16_ ? flash_attention_forward_bf16 : flash_attention_forward)(
      a.atty, a.lse, a.qkv, a.qkv + HD, a.qkv + HD + KVD, ad, ws.attn);
}

void Layers::attention_backward(Workspace& ws, const LayerActs& a, const Rows& r) const {
  const AttnDims ad{r.B, r.T, d_.H, d_.KVH, d_.D, d_.QKV, d_.QKV};
  const int64_t HD = d_.HD(), KVD = d_.KVD();
  (attn_bf16_ ? flash_attention_backward_bf16 : flash_attention_backward)(
      ws.dqkv, ws.dqkv + HD, ws.dqkv + HD + KVD, ws.datty, a.atty, a.lse, a.qkv, a.qkv + HD,
      a.qkv + HD + KVD, ad, ws.attn);
}

void Layers::head_forward(HeadActs& h, const float* x, const int32_t* targets, int64_t N,
                          const float* W, bool keep_logits) const {
  const int64_t C = d_.C, V = d_.V;
  norm(h.lnf, h.lnfh, h.rstdf, x, W + index_.norm, N);  // only feeds the head's products
  // (N, V/tp): this rank's columns
  ops_.mm(false, true, N, V, C, {h.lnf, h.lnfh}, C, ops_.weight(index_.head, W), C, 0.0f, h.logits,
          V);
  h.exps = tp_.size() == 1 && !keep_logits;
  h.dlogits = nullptr;
  if (h.exps && ops_.lowp() && ops_.type() == DType::BF16) {  // the gradient but for dloss
    h.dlogits =
        cross_entropy_forward_grad_lowp(ops_.type(), h.losses, h.ce_stats, h.logits, targets, N, V);
  } else if (h.exps) {  // the backward's softmax without exponentials of its own
    cross_entropy_forward_exps(h.losses, h.ce_stats, h.logits, targets, N, V);
  } else if (tp_.size() == 1) {
    cross_entropy_forward(h.losses, h.ce_stats, h.logits, targets, N, V);
  } else {
    tp_.vocab_loss(h.losses, h.ce_stats, h.ce_max, h.ce_part, h.logits, targets, N, V, d_.v0);
  }
}

Operand Layers::norm_backward(Workspace& ws, float* dw, const float* x, const float* w,
                              const float* rstd, int64_t N, bool accumulate,
                              bool feeds_gemm) const {
  if (!ops_.lowp() || !feeds_gemm) {
    rmsnorm_backward(ws.dres, dw, ws.dln, x, w, rstd, N, d_.C, accumulate);
    return {ws.dres};
  }
  rmsnorm_backward_lowp(ops_.type(), ws.dyh, ws.dres, dw, ws.dln, x, w, rstd, N, d_.C, accumulate);
  return {nullptr, ws.dyh};
}

Operand Layers::head_backward(Workspace& ws, const HeadActs& h, const float* x,
                              const int32_t* targets, float grad_scale, int64_t N, const float* W,
                              float* G, bool feeds_gemm,
                              const std::function<void()>& head_done) const {
  const int64_t C = d_.C, V = d_.V;
  // The logits' gradient, in place; mixed precision: rounded to 16 bits in the same pass.
  Operand dlogits{h.logits};
  float alpha = 1.0f;  // dloss, where the forward left it out of the 16-bit gradient
  if (h.dlogits)
    dlogits = {nullptr, h.dlogits}, alpha = grad_scale;
  else if (ops_.lowp())
    dlogits = {nullptr, cross_entropy_backward_lowp(ops_.type(), h.logits, h.ce_stats, targets,
                                                    grad_scale, N, V, d_.v0, h.exps)};
  else
    cross_entropy_backward(h.logits, h.logits, h.ce_stats, targets, grad_scale, N, V, d_.v0,
                           h.exps);
  // The head is column-parallel over the vocabulary.
  tp_.column_backward(ops_, N, ws.dln, G + index_.head, dlogits, {h.lnf, h.lnfh},
                      ops_.weight(index_.head, W), C, V, alpha, head_done);
  return norm_backward(ws, G + index_.norm, x, W + index_.norm, h.rstdf, N, false, feeds_gemm);
}

Operand Layers::backward(Workspace& ws, const LayerActs& a, const LayerParams& p, const float* x,
                         Operand dres, const Rows& r, const float* W, float* G,
                         bool feeds_gemm) const {
  const int64_t N = r.N(), C = d_.C, HD = d_.HD(), F = d_.F, QKV = d_.QKV;
  std::optional<prof::PartScope> part(prof::Part::mlp);
  // res[l+1] = res_mid + act · Wdownᵀ: dres flows on unchanged to res_mid. Row-parallel:
  // each rank's slice of act gets its gradient without communication.
  ops_.linear_grads(N, ws.dact, G + p.wdown, dres, {a.act, a.acth}, ops_.weight(p.wdown, W), F, C);
  Operand dgu{ws.dgu};
  if (ops_.lowp())
    swiglu_backward_lowp(ops_.type(), ws.dyh, ws.dact, a.gu, N, F), dgu = {nullptr, ws.dyh};
  else
    swiglu_backward(ws.dgu, ws.dact, a.gu, N, F);
  tp_.column_backward(ops_, N, ws.dln, G + p.wgu, dgu, {a.ln2, a.ln2h}, ops_.weight(p.wgu, W), C,
                      2 * F);
  dres = norm_backward(ws, G + p.ln2, a.res_mid, W + p.ln2, a.rstd2, N, true, true);
  part.reset();
  part.emplace(prof::Part::attention);
  // res_mid = res[l] + atty · Woᵀ
  const Operand atty = a.attyh ? Operand{nullptr, a.attyh} : ops_.operand(a.atty, N * HD, ws.xh);
  ops_.linear_grads(N, ws.datty, G + p.wo, dres, atty, ops_.weight(p.wo, W), HD, C);
  attention_backward(ws, a, r);
  Operand dqkv{ws.dqkv};
  if (ops_.lowp()) {  // rotated back and rounded for the products, row by row
    rope_backward_lowp(ops_.type(), ws.dyh, ws.dqkv, ws.cos, ws.sin, r.B, r.T, d_.H, d_.KVH, d_.D,
                       QKV);
    dqkv = {nullptr, ws.dyh};
  } else {
    rope_backward(ws.dqkv, ws.cos, ws.sin, r.B, r.T, d_.H, d_.D, QKV);
    rope_backward(ws.dqkv + HD, ws.cos, ws.sin, r.B, r.T, d_.KVH, d_.D, QKV);
  }
  tp_.column_backward(ops_, N, ws.dln, G + p.wqkv, dqkv, {a.ln1, a.ln1h}, ops_.weight(p.wqkv, W), C,
                      QKV);
  // (the first layer's input gradient goes to the embedding or the previous stage in fp32)
  return norm_backward(ws, G + p.ln1, x, W + p.ln1, a.rstd1, N, true, feeds_gemm);
}

}  // namespace parallama
