#pragma once
// The LLaMA forward and backward pass over a ModelShard.
//
// Tensor parallelism (Megatron): the model takes its tensor-parallel Group as an argument. q|k|v
// and gate|up are split by output rows (column-parallel), o_proj and down_proj by input columns
// (row-parallel): each attention block and each MLP block does one all-reduce in forward (after
// the row-parallel GEMM; the residual is added by tp rank 0 only, so it counts once) and one in
// backward (on the input gradient of the column-parallel GEMM, overlapped with its weight
// gradient). The embedding, the output head and the cross-entropy are vocabulary-parallel:
// each rank holds V/tp rows of the tables and V/tp columns of the logits, never all of them.
// With a size-1 group every collective is a no-op.
//
// Pipeline stages: a shard runs one or more chunks of consecutive layers (several for an
// interleaved schedule); the first chunk of the first stage starts with the embedding, the last
// chunk of the last stage ends with the head and the loss. Each micro-batch in flight through a
// chunk keeps its activations in a slot of its own, from its forward until its backward; slots
// are allocated when first needed and reused, so steady training allocates nothing. The backward
// scratch is shared. The model knows nothing of how stages talk: a chunk takes its input
// activations and returns its output, and the caller moves them.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/group.h"
#include "kernels/matmul.h"
#include "model/params.h"
#include "tensor/arena.h"

namespace parallama {

// Attention is memory-light (kernels/flash_attention.h): no layer ever holds the (B, H, T, T)
// probabilities, only each row's log-sum-exp; backward recomputes the probabilities in tiles.
//

// Time in the tensor-parallel collectives since the last reset: comm_s from each launch to its
// observed completion, exposed_s spent waiting for them (not hidden behind computation).
struct TpCommStats {
  double comm_s = 0, exposed_s = 0;
  int64_t all_reduces = 0;
};

class Llama;

// Generation with a KV cache: the keys and values of the positions a sequence has been fed, for
// each of the model's layers (this rank's KV heads), for `sequences` numbered sequences of up to
// `capacity` positions each, plus what a decode step needs beside the model's activations.
class KVCache {
 public:
  // Throws Error for a capacity beyond the model's max_seq_len.
  KVCache(const Llama& model, int64_t sequences, int64_t capacity);
  int64_t sequences() const { return S_; }
  int64_t capacity() const { return cap_; }
  int64_t length(int64_t seq) const { return len_.at(static_cast<size_t>(seq)); }
  void clear(int64_t seq) { len_.at(static_cast<size_t>(seq)) = 0; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  friend class Llama;
  float* k(int64_t layer, int64_t seq) { return k_.data() + (layer * S_ + seq) * cap_ * kvd_; }
  float* v(int64_t layer, int64_t seq) { return v_.data() + (layer * S_ + seq) * cap_ * kvd_; }
  int64_t S_, cap_, kvd_;
  std::vector<int64_t> len_;
  std::vector<float> k_, v_;        // (layers, sequences, capacity, KVH·D)
  std::vector<float> cos_, sin_;    // (capacity, D/2): the rotary table of every position
  std::vector<float> rcos_, rsin_;  // (rows, D/2): the table rows of one call's positions
  // One call's head: the final rows (S, C), normalised, their rstd, this rank's logits (S, V/tp)
  // and the whole vocabulary's (S, V), with S at most min(rows, sequences).
  std::vector<float> hin_, hn_, rstd_, local_, gathered_, logits_;
};

// `count` new tokens of sequence `seq`, at its next positions.
struct DecodeSegment {
  int64_t seq = 0, count = 0;
};

class Llama {
 public:
  // Throws Error for a shape-only preset, T > max_seq_len, or a tensor-parallel group that does
  // not match the shard's tp_rank / tp_size.
  Llama(const ParamLayout& layout, int64_t B, int64_t T, comm::Group tp = {},
        Recompute recompute = Recompute::none, Precision precision = Precision::fp32);
  ~Llama();

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
  int num_chunks() const { return static_cast<int>(chunks_.size()); }
  bool chunk_has_embedding(int c) const { return chunks_[c].embedding; }
  bool chunk_has_head(int c) const { return chunks_[c].head; }
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

  // --- Generation (a whole model, fp32): the same layers as training, fed with the new tokens
  // of several sequences at once. tokens: the segments' tokens one after another, at most
  // max_rows() in all; each sequence at most once. Each token's keys and values join the cache
  // and its attention covers its sequence's positions so far. Returns the logits (S, V) of each
  // segment's last token over the whole vocabulary (gathered on every tensor-parallel rank),
  // valid until the next call. Throws Error for an id outside the vocabulary, a full cache, or
  // a model that is not whole (pipeline stages) or not fp32.
  const float* decode(const ParamBuffer& params, KVCache& cache,
                      const std::vector<DecodeSegment>& segments, const int32_t* tokens);
  int64_t max_rows() const { return N_; }

  // (B, T, V/tp) logits of the last forward of the head chunk (micro-batch 0 for forward()):
  // this rank's vocabulary columns [shard.vocab_begin, + V/tp); overwritten by backward. Kept
  // only by forward-only passes: forward() without backward_follows, or micro-batch
  // kForwardOnly.
  const float* logits() const;
  int64_t valid_targets() const { return valid_; }
  double loss_sum() const { return loss_sum_; }
  int64_t batch() const { return B_; }
  int64_t seq_len() const { return T_; }
  int64_t dim() const { return C_; }
  Precision precision() const { return precision_; }
  // Bytes of activation memory allocated (slots and shared scratch), and the most micro-batches
  // whose activations were held at once (over all chunks) since the last reset.
  size_t activation_bytes() const;
  int peak_in_flight() const { return peak_in_flight_; }
  size_t peak_activation_bytes() const { return peak_bytes_; }
  void reset_peak();
  const TpCommStats& tp_stats() const { return stats_; }
  void reset_tp_stats() { stats_ = {}; }

 private:
  struct LayerActs {
    // lse (B, H, T): the attention rows' log-sum-exp (memory-light attention keeps no T × T).
    float *ln1, *rstd1, *qkv, *lse, *atty, *res_mid, *ln2, *rstd2, *gu, *act;
    // Mixed precision: ln1, ln2 and act in 16 bits instead (the fp32 pointers are then null);
    // attyh, where the layer keeps its attention output, that output's 16-bit copy as well.
    uint16_t *ln1h, *ln2h, *acth, *attyh;
  };
  // A GEMM operand: fp32, or (mixed precision) its 16-bit copy.
  struct Op {
    const float* f = nullptr;
    const uint16_t* h = nullptr;
    int64_t weight = -1;  // a whole weight's offset in the parameters (bf16: multiplied packed)
    Op at(int64_t off) const { return {f ? f + off : nullptr, h ? h + off : nullptr}; }
  };
  struct LayerParams {  // offsets into a ParamBuffer
    int64_t ln1, wqkv, wo, ln2, wgu, wdown;
  };
  struct Decoding {  // one decode() call, as layer_forward sees it
    KVCache* cache;
    const std::vector<DecodeSegment>* segments;
    const std::vector<int64_t>* first;  // each segment's first row, then the rows in all
    int layer;
  };
  struct Chunk {
    int first = 0, last = 0;  // local layer indices [first, last) into lp_
    bool embedding = false, head = false;
  };
  struct Slot;  // one micro-batch's activations in one chunk
  Slot& acquire(int c, int micro);
  Slot& find(int c, int micro);
  void release(Slot& s);
  void check_ids(const int32_t* ids, bool targets) const;
  // x (n floats) reduced over the tensor-parallel group (sum or max), blocking, timed.
  void tp_reduce(float* x, int64_t n, comm::ReduceOp op = comm::ReduceOp::Sum);
  // Column-parallel input gradient: dx (N, I) = alpha · dy (N, O) · w (O, I) summed over the
  // group while dw (O, I) += alpha · dy (N, O)ᵀ · x (N, I) is computed.
  // dw_done: called once the weight gradient is complete (before dx without tensor parallelism).
  void column_parallel_backward(float* dx, float* dw, Op dy, Op x, Op w, int64_t I, int64_t O,
                                float alpha = 1.0f, const std::function<void()>& dw_done = {});
  // c (M, N) = alpha · op(a) · op(b) + beta · c in the model's precision (alpha on the fp32 sums;
  // with a packed weight, beta 0).
  void mm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, Op a, int64_t lda, Op b, int64_t ldb,
          float beta, float* c, int64_t ldc, float alpha = 1.0f) const;
  // dx (N, I) = dy (N, O) · w (O, I); dw (O, I) += dyᵀ · x (N, I), in the model's precision.
  void linear_grads(float* dx, float* dw, Op dy, Op x, Op w, int64_t I, int64_t O) const;
  Op weight(int64_t offset, const float* W) const;  // the weights at a parameter offset
  // x (n values) as a GEMM operand: itself in fp32, else rounded into `into` (16-bit scratch).
  Op operand(const float* x, int64_t n, uint16_t* into) const;
  // dres_ = (or +=) RMSNorm's input gradient from dln_ (and its weight's gradient into dw).
  // Returns dres_ as the next product's operand: mixed precision, when it feeds one, rounds it
  // into dyh_ on the way (valid until dyh_ is next written).
  Op norm_backward(float* dw, const float* x, const float* w, const float* rstd, bool accumulate,
                   bool feeds_gemm);
  // Mixed precision: the 16-bit copy of the GEMM weights, from params.
  void refresh_weights(const ParamBuffer& params);
  void head_forward(Slot& s, const float* W, bool keep_logits);
  // The training attention of one layer (flash_attention.h), in fp32 or with bf16 tiles.
  void attention_forward(const LayerActs& a) const;
  void attention_backward(const LayerActs& a) const;
  // forward_chunk; keep_logits: leave logits() as they are (the loss then reads them only).
  const float* run_chunk(const ParamBuffer& params, int c, int micro, const int32_t* tokens,
                         const int32_t* targets, const float* in, bool keep_logits);
  // Layer forward from x into a; out (N, C) = the layer's output when given (else stops after
  // the MLP activation: all that backward needs).
  // dec: a decode() call (its rows, positions and cache) instead of the (B, T) batch.
  void layer_forward(const LayerActs& a, const LayerParams& p, const float* x, float* out,
                     const float* W, const Decoding* dec = nullptr);
  // Decoding: the new keys and values into the cache, and each segment's attention over it.
  void cached_attention(const LayerActs& a, const Decoding& dec);
  friend class KVCache;
  // Carves one layer's activations from an arena (lse and atty only when `attention`).
  template <class Take>
  void take_layer(LayerActs& a, Take&& take, bool attention) const;
  // Where layer i of slot s keeps its activations (with recompute, partly the shared ones).
  LayerActs acts_of(const Slot& s, int i) const;

  LlamaConfig cfg_;
  comm::Group tp_;
  int64_t B_, T_, N_;
  int64_t C_, H_, KVH_, D_, F_, V_, QKV_;  // local sizes: heads, FFN and vocabulary are 1/tp
  int64_t v0_ = 0;                         // first vocabulary row of this rank
  int64_t off_embed_ = -1, off_norm_ = -1, off_head_ = -1;
  std::vector<LayerParams> lp_;  // this shard's layers, in order
  std::vector<Chunk> chunks_;
  std::vector<std::vector<std::unique_ptr<Slot>>> slots_;  // per chunk
  Recompute recompute_;
  Precision precision_;
  bool lowp_ = false;
  DType lp_type_ = DType::BF16;
  bool attn_bf16_ = false;  // bf16: the attention's tile products in bf16 (where the CPU has them)
  std::vector<uint16_t> wlp_;  // mixed precision: 16-bit weights at the parameters' offsets
  // bf16: each weight's GEMMs (forward: transposed, input gradient: not) with the weight packed,
  // repacked on first use after each refresh of wlp_.
  struct Packed {
    std::unique_ptr<kernels::PackedGemm> gemm;
    uint64_t version = 0;
  };
  mutable std::map<std::pair<int64_t, bool>, Packed> packed_;
  uint64_t weights_version_ = 0;
  uint16_t *xh_ = nullptr, *dyh_ = nullptr;  // mixed precision: 16-bit operand scratch
  LayerActs shared_{};                       // recompute: one layer's dropped activations
  Arena scratch_;
  float *cos_, *sin_;
  float *dres_, *dln_, *dqkv_, *datty_, *dgu_, *dact_;  // backward scratch
  const float* last_logits_ = nullptr;
  int64_t valid_ = 0;
  double loss_sum_ = 0.0;
  int in_flight_ = 0, peak_in_flight_ = 0;
  size_t held_bytes_ = 0, peak_bytes_ = 0;
  TpCommStats stats_;
};

}  // namespace parallama
