#pragma once
// The LLaMA layers as plain forward and backward functions over explicit activations (LayerActs,
// HeadActs: carved by the caller, per micro-batch) and a shared backward workspace (Workspace).
// A layer calls the tensor-parallel pairs (parallel/tensor_parallel.h) around its projections
// and multiplies through the one operand policy (model/operands.h); it keeps no state of its own
// between calls. Training (model/llama.h) and decoding (model/decoder.h) run the same layers.
//
// Attention is memory-light (kernels/flash_attention.h): no layer ever holds the (B, H, T, T)
// probabilities, only each row's log-sum-exp; backward recomputes the probabilities in tiles.
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/flash_attention.h"
#include "model/operands.h"
#include "model/params.h"
#include "parallel/tensor_parallel.h"

namespace parallama {

// One rank's sizes: heads, FFN and vocabulary are 1/tp; v0 is its first vocabulary row.
struct LocalDims {
  int64_t C, H, KVH, D, F, V, QKV, v0;
  static LocalDims of(const LlamaConfig& cfg, const ModelShard& shard);
  int64_t HD() const { return H * D; }
  int64_t KVD() const { return KVH * D; }
};

// Where a shard's weights are in its ParamBuffer, and its chunks of consecutive layers (several
// for an interleaved pipeline schedule; the first chunk of the first stage starts with the
// embedding, the last chunk of the last stage ends with the head).
struct LayerParams {  // offsets into a ParamBuffer
  int64_t ln1, wqkv, wo, ln2, wgu, wdown;
};
struct ModelIndex {
  struct Chunk {
    int first = 0, last = 0;  // indices [first, last) into layers
    bool embedding = false, head = false;
  };
  int64_t embed = -1, norm = -1, head = -1;  // -1: not on this shard
  std::vector<LayerParams> layers;
  std::vector<Chunk> chunks;
  // Throws Error when q|k|v or gate|up are not adjacent (each group is one GEMM).
  static ModelIndex of(const ParamLayout& layout);
  // The weights that are multiplied (mixed precision keeps a 16-bit copy of them): (offset, n).
  std::vector<std::pair<int64_t, int64_t>> gemm_weights(const LocalDims& d) const;
};

// One layer's activations for N rows. lse (B, H, T): the attention rows' log-sum-exp. Mixed
// precision: ln1, ln2 and act in 16 bits instead (the fp32 pointers are then null); attyh, where
// the layer keeps its attention output, that output's 16-bit copy as well.
struct LayerActs {
  float *ln1, *rstd1, *qkv, *lse, *atty, *res_mid, *ln2, *rstd2, *gu, *act;
  uint16_t *ln1h, *ln2h, *acth, *attyh;
};
// Arena floats for n 16-bit values, and a float pointer as 16-bit storage.
inline size_t halves(int64_t n) {
  return static_cast<size_t>((n + 1) / 2);
}
inline uint16_t* as_half(float* p) {
  return reinterpret_cast<uint16_t*>(p);
}
// Carves one layer's activations for N rows from an arena (lse and atty only when `attention`).
template <class Take>
void take_layer(LayerActs& a, Take&& take, const LocalDims& d, int64_t N, bool lowp,
                bool attention) {
  a = {};
  auto act = [&](float*& f, uint16_t*& h, int64_t n) {  // a GEMM-only activation
    if (lowp)
      h = as_half(take(halves(n)));
    else
      f = take(n);
  };
  act(a.ln1, a.ln1h, N * d.C);
  a.rstd1 = take(N), a.qkv = take(N * d.QKV);
  if (attention) {
    a.lse = take(N * d.H), a.atty = take(N * d.HD());
    // rounded once in the forward, for the output projection's forward and weight gradient
    if (lowp) a.attyh = as_half(take(halves(N * d.HD())));
  }
  a.res_mid = take(N * d.C);
  act(a.ln2, a.ln2h, N * d.C);
  a.rstd2 = take(N), a.gu = take(N * 2 * d.F);
  act(a.act, a.acth, N * d.F);
}

// The head's activations for N rows: the final norm's output (mixed precision: lnfh in 16 bits,
// lnf null), its rstd, this rank's logits (N, V) and the loss's per-row values.
struct HeadActs {
  float *lnf, *rstdf, *logits, *ce_stats /* (N, 2) */, *ce_part /* (N, 2) */, *ce_max, *losses;
  uint16_t* lnfh;
  bool exps = false;  // logits holds exp(logit − max) from cross_entropy_forward_exps
  // bf16 training: logits' first half holds softmax − onehot in bf16 from
  // cross_entropy_forward_grad_lowp; the backward scales its products by dloss.
  uint16_t* dlogits = nullptr;
};

// The backward's scratch for N rows, shared by every layer; with recompute, the activations a
// layer dropped (`shared`); the rotary table of positions 0..T-1.
struct Workspace {
  LayerActs shared{};
  float *cos = nullptr, *sin = nullptr;
  float *dres = nullptr, *dln = nullptr, *dqkv = nullptr, *datty = nullptr, *dgu = nullptr,
        *dact = nullptr;
  uint16_t *xh = nullptr, *dyh = nullptr;  // mixed precision: 16-bit operand scratch
  kernels::AttnScratch attn;               // the attention kernels' per-thread memory
};

// A training batch's rows: B sequences of T positions.
struct Rows {
  int64_t B, T;
  int64_t N() const { return B * T; }
};

class Layers {
 public:
  // q·k·v → atty (and lse) of a layer's rows: training's batch, or decoding's cached positions.
  using Attend = std::function<void(const LayerActs&)>;
  Layers(const LlamaConfig& cfg, const LocalDims& d, const ModelIndex& index, Operands& ops,
         TensorParallel& tp);

  // The vocabulary-parallel embedding of N tokens into x (N, C).
  void embed(float* x, const int32_t* tokens, int64_t N, const float* W) const;
  // One layer over N rows from x into a; out (N, C) = the layer's output when given (else stops
  // after the MLP activation: all that backward needs). xh: mixed precision's 16-bit scratch
  // for the attention output where the layer keeps no copy of it (a.attyh null).
  void forward(const LayerActs& a, const LayerParams& p, const float* x, float* out, const float* W,
               int64_t N, const Attend& attend, uint16_t* xh = nullptr) const;
  // Training attention (rotary embedding, then attention) of a layer, and the attention alone.
  void attend(const LayerActs& a, const Rows& r, Workspace& ws) const;
  void attention_forward(const LayerActs& a, const Rows& r, Workspace& ws) const;
  // The final norm, the head and the loss of N rows from x: h.losses; keep_logits: leave the
  // logits as they are (else the loss leaves what its backward needs there).
  void head_forward(HeadActs& h, const float* x, const int32_t* targets, int64_t N, const float* W,
                    bool keep_logits) const;

  // The backward of one layer, given the gradient of its output (ws.dres, as the operand
  // dres), its input x: accumulates the weights' gradients into G, leaves its input's gradient
  // in ws.dres and returns it as the next product's operand (rounded into ws.dyh when
  // feeds_gemm under mixed precision).
  Operand backward(Workspace& ws, const LayerActs& a, const LayerParams& p, const float* x,
                   Operand dres, const Rows& r, const float* W, float* G, bool feeds_gemm) const;
  // The head's and the final norm's backward from the loss (scaled by grad_scale), x the final
  // norm's input; head_done(): the head's weight gradient is complete.
  Operand head_backward(Workspace& ws, const HeadActs& h, const float* x, const int32_t* targets,
                        float grad_scale, int64_t N, const float* W, float* G, bool feeds_gemm,
                        const std::function<void()>& head_done) const;
  void embed_backward(float* G, const float* dx, const int32_t* tokens, int64_t N) const;

 private:
  Operand norm(float* f, uint16_t* h, float* rstd, const float* in, const float* w,
               int64_t N) const;
  Operand norm_backward(Workspace& ws, float* dw, const float* x, const float* w, const float* rstd,
                        int64_t N, bool accumulate, bool feeds_gemm) const;
  // y (N, C) = (one rank: residual, others: 0) + v (N, K) · w (C, K)ᵀ, summed over the group.
  void row_parallel(float* y, const float* residual, Operand v, Operand w, int64_t K,
                    int64_t N) const;
  void attention_backward(Workspace& ws, const LayerActs& a, const Rows& r) const;

  const LlamaConfig& cfg_;
  LocalDims d_;
  const ModelIndex& index_;
  Operands& ops_;
  TensorParallel& tp_;
  bool attn_bf16_;  // bf16: the attention's tile products in bf16 (where the CPU has them)
};

}  // namespace parallama
