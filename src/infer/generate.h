#pragma once
// Generation with a KV cache, through the model's own layers (model/decoder.h): the same layers
// that train, fed the new tokens of a batch of sequences at once. A batch's prompts are fed
// together (in calls of at most the model's rows, a long prompt over several), then every
// unfinished sequence takes one token per step. Under tensor parallelism every rank of the group
// runs the same calls on its shard; the logits are gathered whole, so every rank samples the
// same tokens.
#include <cstdint>
#include <random>
#include <vector>

#include "comm/group.h"
#include "model/decoder.h"
#include "model/params.h"

namespace parallama {

struct SampleConfig {
  float temperature = 0.8f;  // 0 = greedy
  float top_p = 0.95f;       // nucleus sampling: smallest set of tokens with this probability mass
  uint64_t seed = 1;
  int max_tokens = 200;
  // Ids at or above this are never sampled: a model vocabulary padded past its tokenizer's
  // (common in Hugging Face models) has rows the tokenizer cannot decode. 0: every id.
  int64_t vocab = 0;
};

// One sequence's continuation: the new ids (without eos), and the seconds from the start of its
// batch until it ended.
struct Generated {
  std::vector<int32_t> tokens;
  double seconds = 0;
};

class Generator {
 public:
  // sequences: how many generate together (a batch). Each has room for `context` positions (0,
  // or more than the model's max_seq_len: max_seq_len), so that a model of a long context
  // (Llama 3.1: 131072) generates a short text in little memory. rows: the most tokens one call
  // of the model takes (0: enough for a step of every sequence, and at least 128).
  Generator(const ParamLayout& layout, const ParamBuffer& params, comm::Group tp = {},
            int64_t context = 0, int64_t sequences = 1, int64_t rows = 0);
  // Sequence 0 alone: feeds one token at its next position and returns the logits (V) for the
  // position after it.
  const float* feed(int32_t token);
  int64_t position() const { return cache_.length(0); }
  void reset() { cache_.clear(0); }
  // Feeds the prompt, then samples until max_tokens or eos; returns the new ids (without eos).
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const SampleConfig& sc,
                                int32_t eos_id);
  // Up to sequences() prompts together, each with its own sampling (and seed): each result is
  // what generate() gives that prompt alone, up to the rounding of the batch's GEMMs.
  std::vector<Generated> generate_batch(const std::vector<std::vector<int32_t>>& prompts,
                                        const std::vector<SampleConfig>& sc, int32_t eos_id);
  int64_t sequences() const { return cache_.sequences(); }
  int64_t context() const { return cache_.capacity(); }
  size_t cache_bytes() const { return cache_.bytes(); }

 private:
  int32_t sample(const float* logits, const SampleConfig& sc, std::mt19937_64& rng);
  // The model on `rows` tokens, with at most one thread per row.
  const float* decode(const std::vector<DecodeSegment>& seg, const int32_t* tokens);

  const ParamBuffer& params_;
  int64_t V_;
  Decoder model_;
  KVCache cache_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace parallama
