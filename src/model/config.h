#pragma once
// LlamaConfig: the shape of a LLaMA-family model, with named presets.
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/rope.h"

namespace parallama {

struct LlamaConfig {
  std::string name = "custom";
  int dim = 0;          // C
  int n_layers = 0;     // L
  int n_heads = 0;      // H
  int n_kv_heads = 0;   // KVH (grouped-query attention when < H)
  int ffn_dim = 0;      // F
  int vocab_size = 0;   // V
  int max_seq_len = 0;  // longest T the model is built for
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  kernels::RopeScaling rope_scaling;  // rotary frequencies for long contexts (Llama 3.1)
  bool tie_embeddings = false;        // lm_head shares model.embed_tokens.weight
  bool shape_only = false;            // a published shape for sizing; not trained here

  int head_dim() const { return n_heads > 0 ? dim / n_heads : 0; }  // D
  int q_dim() const { return n_heads * head_dim(); }                // H*D
  int kv_dim() const { return n_kv_heads * head_dim(); }            // KVH*D
  int64_t num_params() const;
  // Parameters that take part in matrix multiplies (all projections and the output head).
  int64_t num_matmul_params() const;

  // Throws Error naming the first invalid field and what would fix it.
  void validate() const;
};

// Names accepted by llama_preset().
std::vector<std::string> preset_names();
// Throws Error listing the known presets when `name` is unknown. "custom" (not in
// preset_names()) is a blank shape whose every [model] key must be given, as a model converted
// from another format records it.
LlamaConfig llama_preset(const std::string& name);

}  // namespace parallama
