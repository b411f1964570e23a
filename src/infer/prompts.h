#pragma once
// The prompts of data-parallel generation: read from a file, and cut into batches.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace parallama {

struct Prompt {
  nlohmann::json id;             // as given (string or integer), else the line number
  std::string text;              // the prompt itself
  std::optional<uint64_t> seed;  // a sampling seed of its own
  int64_t line = 0;              // 1-based, for messages
};

// FILE holds one prompt per line, or (when its first non-blank line starts with '{') JSON Lines:
// one object per line with "prompt" (a string) and optionally "id" (a string or an integer) and
// "seed" (an integer ≥ 0). Blank lines are skipped; a line's number stays its id. Throws Error
// naming the file and line for a file that cannot be read, holds no prompt, is not UTF-8, or
// has a bad JSON line, an empty prompt or a repeated id.
std::vector<Prompt> read_prompts(const std::string& path);

// Batches of at most `batch` prompts, as lists of prompt indices: by falling prompt length (ties
// in input order), so that the prompts of a batch are of similar length and finish together. The
// plan depends only on the lengths and the batch size, never on the number of ranks, so each prompt
// is generated with the same batch-mates (and the same bits) on any number of ranks.
std::vector<std::vector<int64_t>> plan_batches(const std::vector<int64_t>& prompt_tokens,
                                               int64_t batch);

}  // namespace parallama
