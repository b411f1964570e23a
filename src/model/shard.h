#pragma once
// ModelShard: the part of the model one rank owns. Layers [first_layer, last_layer) (and, for an
// interleaved pipeline schedule, further chunks of layers), whether it holds the embedding and
// the output head, and its tensor-parallel slice (heads and FFN columns). A last pipeline stage
// whose head is tied to the embedding holds its own copy of the embedding table.
// Single-process training owns the whole model: ModelShard::whole(config).
// Tensor parallelism splits query heads, key/value heads and FFN columns evenly over the tp ranks
// (rank r holds heads [r·H/tp, (r+1)·H/tp), and so on) and the vocabulary as evenly as it goes:
// the first V % tp ranks hold one row more, so any vocabulary size works.
#include <algorithm>
#include <utility>
#include <vector>

#include "model/config.h"

namespace parallama {

struct ModelShard {
  int first_layer = 0;
  int last_layer = 0;
  bool has_embedding = true;
  bool has_head = true;
  int tp_rank = 0;
  int tp_size = 1;
  // Interleaved pipelines: the rank's further layer ranges, after [first_layer, last_layer) and
  // in increasing order (model chunks 1, 2, ...); empty otherwise.
  std::vector<std::pair<int, int>> later_chunks = {};

  static ModelShard whole(const LlamaConfig& c) {
    return ModelShard{0, c.n_layers, true, true, 0, 1};
  }

  bool is_whole(const LlamaConfig& c) const {
    return first_layer == 0 && last_layer == c.n_layers && later_chunks.empty() && has_embedding &&
           has_head && tp_size == 1;
  }
  // The last stage of a pipeline with a tied head keeps a copy of the embedding as its head.
  bool has_tied_copy(const LlamaConfig& c) const {
    return c.tie_embeddings && has_head && !has_embedding;
  }
  // Every chunk of layers this rank runs, in order: [first_layer, last_layer) first.
  std::vector<std::pair<int, int>> chunks() const {
    std::vector<std::pair<int, int>> c = {{first_layer, last_layer}};
    c.insert(c.end(), later_chunks.begin(), later_chunks.end());
    return c;
  }
  // Local (tensor-parallel) sizes.
  int local_heads(const LlamaConfig& c) const { return c.n_heads / tp_size; }
  int local_kv_heads(const LlamaConfig& c) const { return c.n_kv_heads / tp_size; }
  int local_ffn(const LlamaConfig& c) const { return c.ffn_dim / tp_size; }
  int local_vocab(const LlamaConfig& c) const {
    return c.vocab_size / tp_size + (tp_rank < c.vocab_size % tp_size ? 1 : 0);
  }
  int vocab_begin(const LlamaConfig& c) const {
    return tp_rank * (c.vocab_size / tp_size) + std::min(tp_rank, c.vocab_size % tp_size);
  }

  // Throws Error naming the field that does not fit the model.
  void validate(const LlamaConfig& c) const;
};

}  // namespace parallama
