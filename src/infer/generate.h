#pragma once
// Token-by-token generation with a KV cache. Under tensor parallelism every rank of the group
// runs the same calls on its shard (heads, FFN columns and vocabulary rows split as in training);
// the logits are gathered whole, so every rank samples the same tokens.
#include <cstdint>
#include <random>
#include <vector>

#include "comm/group.h"
#include "model/params.h"
#include "tensor/arena.h"

namespace parallama {

struct SampleConfig {
  float temperature = 0.8f;  // 0 = greedy
  float top_p = 0.95f;       // nucleus sampling: smallest set of tokens with this probability mass
  uint64_t seed = 1;
  int max_tokens = 200;
};

class Generator {
 public:
  // The KV cache holds `context` positions (0, or more than the model's max_seq_len: max_seq_len),
  // so that a model of a long context (Llama 3.1: 131072) generates a short text in little memory.
  Generator(const ParamLayout& layout, const ParamBuffer& params, comm::Group tp = {},
            int64_t context = 0);
  // Feeds one token at the next position and returns the logits (V) for the position after it.
  const float* feed(int32_t token);
  int64_t position() const { return pos_; }
  void reset() { pos_ = 0; }
  // Feeds the prompt, then samples until max_tokens or eos; returns the new ids (without eos).
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const SampleConfig& sc,
                                int32_t eos_id);

 private:
  int32_t sample(const float* logits, const SampleConfig& sc, std::mt19937_64& rng);

  const LlamaConfig& cfg_;
  const ParamBuffer& params_;
  comm::Group tp_;
  int64_t C_, H_, KVH_, D_, F_, V_, QKV_, maxT_;  // local: heads, FFN and vocabulary are 1/tp
  int64_t Vfull_, v0_;
  int64_t pos_ = 0;
  std::vector<int64_t> off_;  // per layer: ln1, wqkv, wo, ln2, wgu, wdown
  int64_t off_embed_, off_norm_, off_head_;
  Arena arena_;
  float *x_, *xn_, *qkv_, *att_, *atty_, *gu_, *act_, *logits_ /* (V) */, *local_ /* (V/tp) */;
  float *rstd_, *cos_, *sin_;
  std::vector<float*> kcache_, vcache_;  // per layer (maxT, KVH·D)
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace parallama
