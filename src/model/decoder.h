#pragma once
// Generation with a KV cache: the model's own layers (model/layers.h) fed the new tokens of
// several sequences at once, in fp32. A Decoder owns the activations of the rows one call takes;
// a KVCache, the keys and values of the positions each sequence has been fed. Under tensor
// parallelism every rank of the group runs the same calls on its shard and the logits are
// gathered whole.
#include <cstdint>
#include <vector>

#include "comm/group.h"
#include "model/layers.h"
#include "model/operands.h"
#include "model/params.h"
#include "parallel/tensor_parallel.h"
#include "tensor/arena.h"

namespace parallama {

class Decoder;

// The keys and values of each of the model's layers (this rank's KV heads), for `sequences`
// numbered sequences of up to `capacity` positions each, and the rotary table of every position.
class KVCache {
 public:
  // Throws Error for a capacity beyond the model's max_seq_len.
  KVCache(const Decoder& model, int64_t sequences, int64_t capacity);
  int64_t sequences() const { return S_; }
  int64_t capacity() const { return cap_; }
  int64_t length(int64_t seq) const { return len_.at(static_cast<size_t>(seq)); }
  void clear(int64_t seq) { len_.at(static_cast<size_t>(seq)) = 0; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  friend class Decoder;
  float* k(int64_t layer, int64_t seq) { return k_.data() + (layer * S_ + seq) * cap_ * kvd_; }
  float* v(int64_t layer, int64_t seq) { return v_.data() + (layer * S_ + seq) * cap_ * kvd_; }
  int64_t S_, cap_, kvd_;
  std::vector<int64_t> len_;
  std::vector<float> k_, v_;      // (layers, sequences, capacity, KVH·D)
  std::vector<float> cos_, sin_;  // (capacity, D/2): the rotary table of every position
};

// `count` new tokens of sequence `seq`, at its next positions.
struct DecodeSegment {
  int64_t seq = 0, count = 0;
};

class Decoder {
 public:
  // rows: the most tokens one call takes. Throws Error for a shape-only preset or a model that
  // is not whole on this rank (pipeline stages).
  Decoder(const ParamLayout& layout, int64_t rows, comm::Group tp = {});
  Decoder(const Decoder&) = delete;  // its layers hold references to its members
  Decoder& operator=(const Decoder&) = delete;
  // tokens: the segments' tokens one after another, at most max_rows() in all; each sequence at
  // most once. Each token's keys and values join the cache and its attention covers its
  // sequence's positions so far. Returns the logits (S, V) of each segment's last token over the
  // whole vocabulary, valid until the next call. Throws Error for an id outside the vocabulary
  // or a full cache.
  const float* decode(const ParamBuffer& params, KVCache& cache,
                      const std::vector<DecodeSegment>& segments, const int32_t* tokens);
  int64_t max_rows() const { return rows_; }

 private:
  friend class KVCache;
  // The new keys and values of layer `layer` into the cache, and each segment's attention.
  void cached_attention(const LayerActs& a, KVCache& kv, const std::vector<DecodeSegment>& segs,
                        const std::vector<int64_t>& first, int layer);
  // The head of each segment's last row (in x): the logits of the whole vocabulary.
  const float* head(const float* x, const std::vector<int64_t>& first, const float* W);

  LlamaConfig cfg_;
  LocalDims d_;
  ModelIndex index_;
  int64_t rows_;
  Operands ops_;  // fp32
  TensorParallel tp_;
  Layers layers_;
  Arena arena_;
  LayerActs acts_{};
  // The attention kernels' memory, one per thread: each segment's attention is a task.
  std::vector<kernels::AttnScratch> attn_;
  float *x_ = nullptr, *y_ = nullptr;        // (rows, C): a layer's input and output
  float *rcos_ = nullptr, *rsin_ = nullptr;  // (rows, D/2): the rotary rows of the call's tokens
  // The head's rows (S, C) and their norm, rstd, this rank's logits (S, V/tp), and the whole
  // vocabulary's (S, V) before (gathered) and after the columns are put in order; S <= rows.
  std::vector<float> hin_, hn_, rstd_, local_, gathered_, logits_;
};

}  // namespace parallama
