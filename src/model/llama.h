#pragma once
// The LLaMA model of one rank: its shard's chunks of layers (model/layers.h) run for a batch of
// (B, T) tokens, forward and backward, with the activations of each micro-batch in flight in a
// slot of their own (model/slots.h), the operand policy of its precision (model/operands.h) and
// its tensor-parallel group (parallel/tensor_parallel.h). Generation runs the same layers in
// model/decoder.h.
//
// Pipeline stages: a shard runs one or more chunks of consecutive layers (several for an
// interleaved schedule); the first chunk of the first stage starts with the embedding, the last
// chunk of the last stage ends with the head and the loss. The backward scratch is shared. The
// model knows nothing of how stages talk: a chunk takes its input activations and returns its
// output, and the caller moves them.
#include <cstdint>
#include <functional>
#include <vector>

#include "comm/group.h"
#include "model/layers.h"
#include "model/operands.h"
#include "model/params.h"
#include "model/slots.h"
#include "parallel/tensor_parallel.h"
#include "tensor/arena.h"

namespace parallama {

class Llama {
 public:
  // Throws Error for a shape-only preset, T > max_seq_len, or a tensor-parallel group that does
  // not match the shard's tp_rank / tp_size.
  Llama(const ParamLayout& layout, int64_t B, int64_t T, comm::Group tp = {},
        Recompute recompute = Recompute::none, Precision precision = Precision::fp32);
  ~Llama();
  Llama(const Llama&) = delete;  // its layers hold references to its members
  Llama& operator=(const Llama&) = delete;

  // --- The whole model on this rank (one chunk holding the embedding and the head).
  // tokens, targets (B, T); targets may hold kernels::kIgnoreIndex. Returns the mean loss over
  // the targets that are not ignored. Throws Error for an id outside the vocabulary.
  // backward_follows: a training pass, whose logits() are then not kept (the loss leaves its
  // exponentials there for backward); otherwise backward may still follow, a little slower.
  float forward(const ParamBuffer& params, const int32_t* tokens, const int32_t* targets,
                bool backward_follows = false);
  // grads += ∂(Σ losses · grad_scale)/∂params, for the batch of the last forward. Use
  // grad_scale = 1 / valid_targets() for the gradient of the mean loss; gradient accumulation
  // over micro-batches passes 1 / (valid targets of all of them).
  // on_final(offset), when given, is called as soon as every gradient at flat offsets >= offset
  // is final (after the head, after each layer, after the embedding): data parallelism starts
  // reducing those while backward goes on.
  void backward(const ParamBuffer& params, ParamBuffer& grads, float grad_scale,
                const std::function<void(int64_t)>& on_final = {});

  // --- Pipeline execution: micro-batch `micro` through chunk c of this shard.
  int num_chunks() const { return static_cast<int>(index_.chunks.size()); }
  bool chunk_has_embedding(int c) const { return index_.chunks[c].embedding; }
  bool chunk_has_head(int c) const { return index_.chunks[c].head; }
  // The micro-batch id of a forward-only pass (evaluation). Mixed precision takes its 16-bit
  // copy of the weights at chunk 0 of micro-batch 0 (a step's first forward) and of this id: an
  // evaluation sees the weights as they are, not as the last step's forward saw them.
  static constexpr int kForwardOnly = 1 << 20;
  // tokens, targets (B, T) of the micro-batch; in (N, C): the previous chunk's output (unused by
  // the embedding chunk). Keeps the activations until backward_chunk(c, micro). Returns the
  // output (N, C), valid until then, or nullptr for the head chunk, whose loss_sum() and
  // valid_targets() are then this micro-batch's.
  const float* forward_chunk(const ParamBuffer& params, int c, int micro, const int32_t* tokens,
                             const int32_t* targets, const float* in);
  // dout (N, C): the gradient of the chunk's output (unused by the head chunk). Accumulates the
  // weight gradients, frees the micro-batch's slot and returns the gradient of the chunk's input
  // (N, C), valid until the next backward_chunk, or nullptr for the embedding chunk.
  const float* backward_chunk(const ParamBuffer& params, ParamBuffer& grads, int c, int micro,
                              float grad_scale, const float* dout,
                              const std::function<void(int64_t)>& on_final = {});

  // Frees the slot of a micro-batch that ran forward only (evaluation).
  void discard_chunk(int c, int micro);

  // (B, T, V/tp) logits of the last forward of the head chunk (micro-batch 0 for forward()):
  // this rank's vocabulary columns [shard.vocab_begin, + V/tp); overwritten by backward. Kept
  // only by forward-only passes: forward() without backward_follows, or micro-batch
  // kForwardOnly.
  const float* logits() const;
  int64_t valid_targets() const { return valid_; }
  double loss_sum() const { return loss_sum_; }
  int64_t batch() const { return rows_.B; }
  int64_t seq_len() const { return rows_.T; }
  int64_t dim() const { return d_.C; }
  Precision precision() const { return ops_.precision(); }
  // Bytes of activation memory allocated (slots and shared scratch), and the most micro-batches
  // whose activations were held at once (over all chunks) since the last reset.
  size_t activation_bytes() const;
  int peak_in_flight() const { return slots_.peak_in_flight(); }
  size_t peak_activation_bytes() const { return slots_.peak_bytes(); }
  void reset_peak() { slots_.reset_peak(); }
  const TpCommStats& tp_stats() const { return tp_.stats(); }
  void reset_tp_stats() { tp_.reset_stats(); }

 private:
  Slot& acquire(int c, int micro);
  void check_ids(const int32_t* ids, bool targets) const;
  // forward_chunk; keep_logits: leave logits() as they are (the loss then reads them only).
  const float* run_chunk(const ParamBuffer& params, int c, int micro, const int32_t* tokens,
                         const int32_t* targets, const float* in, bool keep_logits);
  // Where layer i of slot s keeps its activations (with recompute, partly the shared ones).
  LayerActs acts_of(const Slot& s, int i) const;
  // The training attention of a layer, as Layers::forward calls it.
  Layers::Attend attend();

  LlamaConfig cfg_;
  LocalDims d_;
  ModelIndex index_;
  Rows rows_;
  Recompute recompute_;
  Operands ops_;
  TensorParallel tp_;
  Layers layers_;
  std::vector<std::pair<int64_t, int64_t>> gemm_weights_;  // mixed precision's 16-bit copies
  SlotPool slots_;
  Workspace ws_;
  Arena scratch_;  // ws_'s memory
  const float* last_logits_ = nullptr;
  int64_t valid_ = 0;
  double loss_sum_ = 0.0;
};

}  // namespace parallama
