#pragma once
// The LLaMA forward and backward pass over a ModelShard. All activations are allocated once, at
// construction, for a fixed micro-batch (B, T); a training step allocates nothing.
#include <cstdint>
#include <functional>
#include <vector>

#include "model/params.h"
#include "tensor/arena.h"

namespace parallama {

class Llama {
 public:
  // Throws Error when the shard is not the whole model (pipeline and tensor-parallel execution
  // are built on this class later) or when T exceeds the model's max_seq_len.
  Llama(const ParamLayout& layout, int64_t B, int64_t T);

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

  // (B, T, V) logits of the last forward; overwritten by backward.
  const float* logits() const { return logits_; }
  int64_t valid_targets() const { return valid_; }
  double loss_sum() const { return loss_sum_; }
  int64_t batch() const { return B_; }
  int64_t seq_len() const { return T_; }
  size_t activation_bytes() const { return arena_.floats() * sizeof(float); }

 private:
  struct LayerActs {
    float *ln1, *rstd1, *qkv, *att, *atty, *res_mid, *ln2, *rstd2, *gu, *act;
  };
  struct LayerParams {  // offsets into a ParamBuffer
    int64_t ln1, wqkv, wo, ln2, wgu, wdown;
  };
  void check_ids(const int32_t* ids, bool targets) const;

  LlamaConfig cfg_;
  int64_t B_, T_, N_;
  int64_t C_, H_, KVH_, D_, F_, V_, QKV_;
  int64_t off_embed_ = 0, off_norm_ = 0, off_head_ = 0;
  std::vector<LayerParams> lp_;
  Arena arena_;
  std::vector<LayerActs> acts_;
  std::vector<float*> res_;  // L + 1 residual streams (N, C): input of each layer, then the last
  float *lnf_, *rstdf_, *logits_, *ce_stats_ /* (N, 2) */, *losses_, *cos_, *sin_;
  float *dres_, *dln_, *dqkv_, *datty_, *dgu_, *dact_;  // backward scratch
  std::vector<int32_t> tokens_, targets_;
  int64_t valid_ = 0;
  double loss_sum_ = 0.0;
};

}  // namespace parallama
