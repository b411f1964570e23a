#include "model/shard.h"

#include <string>

#include "tensor/error.h"

namespace parallama {

void ModelShard::validate(const LlamaConfig& c) const {
  auto s = [](int v) { return std::to_string(v); };
  int prev_end = 0;
  for (const auto& [first, last] : chunks()) {
    if (first < prev_end || last > c.n_layers || first >= last)
      throw Error("invalid model shard: layer range [" + s(first) + ", " + s(last) +
                  ") must be a non-empty part of [0, " + s(c.n_layers) +
                  ") after the shard's earlier chunks");
    prev_end = last;
  }
  if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size)
    throw Error("invalid model shard: tensor-parallel rank " + s(tp_rank) + " of " + s(tp_size));
  // Each rank holds whole heads, whole key/value heads (a query head's key/value head must be on
  // its rank) and an equal share of the FFN columns; the vocabulary splits unevenly if need be.
  auto rule = [&](int v, const char* name) {
    if (v % tp_size)
      throw Error("--tp " + s(tp_size) + " does not divide model." + name + " " + s(v) +
                  ": tensor parallelism needs " + name + " % tp == 0 (each rank holds an equal " +
                  "share); choose a tp that divides it");
  };
  rule(c.n_kv_heads, "n_kv_heads");
  rule(c.n_heads, "n_heads");
  rule(c.ffn_dim, "ffn_dim");
  if (c.vocab_size < tp_size)
    throw Error("--tp " + s(tp_size) + " exceeds model.vocab_size " + s(c.vocab_size));
}

}  // namespace parallama
