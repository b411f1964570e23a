#pragma once
// ModelShard: the part of the model one rank owns. Layers [first_layer, last_layer), whether it
// holds the embedding and the output head, and its tensor-parallel slice (heads and FFN columns).
// Single-process training owns the whole model: ModelShard::whole(config).
// Tensor parallelism splits query heads, key/value heads and FFN columns evenly over the tp ranks
// (rank r holds heads [r·H/tp, (r+1)·H/tp), and so on) and the vocabulary as evenly as it goes:
// the first V % tp ranks hold one row more, so any vocabulary size works.
#include <algorithm>

#include "model/config.h"

namespace parallama {

struct ModelShard {
  int first_layer = 0;
  int last_layer = 0;
  bool has_embedding = true;
  bool has_head = true;
  int tp_rank = 0;
  int tp_size = 1;

  static ModelShard whole(const LlamaConfig& c) {
    return ModelShard{0, c.n_layers, true, true, 0, 1};
  }

  bool is_whole(const LlamaConfig& c) const {
    return first_layer == 0 && last_layer == c.n_layers && has_embedding && has_head &&
           tp_size == 1;
  }
  int num_layers() const { return last_layer - first_layer; }
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
