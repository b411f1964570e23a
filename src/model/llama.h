#pragma once
// The LLaMA forward and backward pass over a ModelShard. All activations are allocated once, at
// construction, for a fixed micro-batch (B, T); a training step allocates nothing.
//
// Tensor parallelism (Megatron): the model takes its tensor-parallel Group as an argument. q|k|v
// and gate|up are split by output rows (column-parallel), o_proj and down_proj by input columns
// (row-parallel): each attention block and each MLP block does one all-reduce in forward (after
// the row-parallel GEMM; the residual is added by tp rank 0 only, so it counts once) and one in
// backward (on the input gradient of the column-parallel GEMM, overlapped with its weight
// gradient). The embedding, the output head and the cross-entropy are vocabulary-parallel:
// each rank holds V/tp rows of the tables and V/tp columns of the logits, never all of them.
// With a size-1 group every collective is a no-op.
#include <cstdint>
#include <functional>
#include <vector>

#include "comm/group.h"
#include "model/params.h"
#include "tensor/arena.h"

namespace parallama {

// Time in the tensor-parallel collectives since the last reset: comm_s from each launch to its
// observed completion, exposed_s spent waiting for them (not hidden behind computation).
struct TpCommStats {
  double comm_s = 0, exposed_s = 0;
  int64_t all_reduces = 0;
};

class Llama {
 public:
  // Throws Error for a pipeline shard (not built yet), a shape-only preset, T > max_seq_len, or
  // a tensor-parallel group that does not match the shard's tp_rank / tp_size.
  Llama(const ParamLayout& layout, int64_t B, int64_t T, comm::Group tp = {});

  // tokens, targets (B, T); targets may hold kernels::kIgnoreIndex. Returns the mean loss over
  // the targets that are not ignored. Throws Error for an id outside the vocabulary.
  float forward(const ParamBuffer& params, const int32_t* tokens, const int32_t* targets);

  // grads += ∂(Σ losses · grad_scale)/∂params, for the batch of the last forward. Use
  // grad_scale = 1 / valid_targets() for the gradient of the mean loss; gradient accumulation
  // over micro-batches passes 1 / (valid targets of all of them).
  // on_final(offset), when given, is called as soon as every gradient at flat offsets >= offset
  // is final (after the head, after each layer, after the embedding): data parallelism starts
  // reducing those while backward goes on.
  void backward(const ParamBuffer& params, ParamBuffer& grads, float grad_scale,
                const std::function<void(int64_t)>& on_final = {});

  // (B, T, V/tp) logits of the last forward: this rank's vocabulary columns
  // [shard.vocab_begin, + V/tp); overwritten by backward.
  const float* logits() const { return logits_; }
  int64_t valid_targets() const { return valid_; }
  double loss_sum() const { return loss_sum_; }
  int64_t batch() const { return B_; }
  int64_t seq_len() const { return T_; }
  size_t activation_bytes() const { return arena_.floats() * sizeof(float); }
  const TpCommStats& tp_stats() const { return stats_; }
  void reset_tp_stats() { stats_ = {}; }

 private:
  struct LayerActs {
    float *ln1, *rstd1, *qkv, *att, *atty, *res_mid, *ln2, *rstd2, *gu, *act;
  };
  struct LayerParams {  // offsets into a ParamBuffer
    int64_t ln1, wqkv, wo, ln2, wgu, wdown;
  };
  void check_ids(const int32_t* ids, bool targets) const;
  // Sum of x (n floats) over the tensor-parallel group, blocking.
  void tp_sum(float* x, int64_t n);
  // Column-parallel input gradient: dx (N, I) = dy (N, O) · w (O, I) summed over the group while
  // dw (O, I) += dy (N, O)ᵀ · x (N, I) is computed.
  void column_parallel_backward(float* dx, float* dw, const float* dy, const float* x,
                                const float* w, int64_t I, int64_t O);
  void cross_entropy(const float* W);

  LlamaConfig cfg_;
  comm::Group tp_;
  int64_t B_, T_, N_;
  int64_t C_, H_, KVH_, D_, F_, V_, QKV_;  // local sizes: heads, FFN and vocabulary are V/tp
  int64_t v0_ = 0;                         // first vocabulary row of this rank
  int64_t off_embed_ = 0, off_norm_ = 0, off_head_ = 0;
  std::vector<LayerParams> lp_;
  Arena arena_;
  std::vector<LayerActs> acts_;
  std::vector<float*> res_;  // L + 1 residual streams (N, C): input of each layer, then the last
  float *lnf_, *rstdf_, *logits_, *ce_stats_ /* (N, 2) */, *ce_part_ /* (N, 2) */, *ce_max_;
  float *losses_, *cos_, *sin_;
  float *dres_, *dln_, *dqkv_, *datty_, *dgu_, *dact_;  // backward scratch
  std::vector<int32_t> tokens_, targets_;
  int64_t valid_ = 0;
  double loss_sum_ = 0.0;
  TpCommStats stats_;
};

}  // namespace parallama
