#pragma once
// What a byte-level BPE tokenizer is made of, read from tokenizer.json (and tokenizer_config.json)
// and checked: the tokens by id, the byte tokens, the merges by rank, the added tokens, the
// pre-tokenizer's pattern, BOS and EOS. data/bpe.h encodes with it.
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace parallama {

enum class TokenKind : uint8_t { normal, special, added };  // added: an added token, not special

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool lstrip = false, rstrip = false;  // whitespace beside it in the text belongs to it
};

inline uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct BpeVocab {
  std::vector<std::string> bytes;    // by id: the bytes a token stands for (added: its content)
  std::vector<std::string> spelled;  // by id: as tokenizer.json spells it
  std::vector<TokenKind> kind;       // by id
  std::unordered_map<std::string, int32_t> by_bytes;  // the vocabulary's tokens by their bytes
  std::array<int32_t, 256> byte_id{};                 // the token of each single byte
  struct Merge {
    int32_t rank, merged;
  };
  std::unordered_map<uint64_t, Merge> merges;           // by pair_key(left, right)
  std::vector<std::pair<int32_t, int32_t>> merge_list;  // by rank
  std::vector<AddedToken> added;
  std::string pattern;  // the pre-tokenizer's Split pattern, as tokenizer.json spells it
  bool ignore_merges = false;
  int32_t bos = -1, eos = -1;
  bool adds_bos = false;  // the post-processor puts BOS first
  size_t max_token_bytes = 1;
};

// Throws Error naming `name` (see ByteBpe's constructor).
BpeVocab read_bpe_vocab(const std::string& json_text, const std::string& config_text,
                        const std::string& name);

// GPT-2's byte-to-unicode table: the character that stands for each byte in a byte-level
// vocabulary (printable Latin-1 bytes stand for themselves; the others for U+0100 onwards).
std::array<uint32_t, 256> byte_level_alphabet();

}  // namespace parallama
