#pragma once
// A byte-level BPE tokenizer read from a Hugging Face tokenizer.json: the tokenizer of Llama 3
// (and GPT-2). Encoding: added tokens ("<|begin_of_text|>" and friends) are matched in the text
// first, leftmost and longest, and never split; the text between them is cut into pre-tokens by
// the pre-tokenizer's Split pattern (PCRE2, with Unicode properties), each pre-token's bytes are
// the byte-level alphabet's characters (GPT-2's byte-to-unicode table), and the merges apply by
// rank, lowest first and leftmost among equals; with ignore_merges a pre-token that is a whole
// token of the vocabulary is taken as it is. Bytes that are not UTF-8 match no pattern: each run
// of them is a pre-token of its own, so any byte sequence encodes and decodes back unchanged.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace parallama {

class ByteBpe {
 public:
  // tokenizer.json's text and tokenizer_config.json's (empty: none; it names BOS and EOS).
  // Throws Error naming `name` for anything it cannot read as a byte-level BPE: another model type
  // (WordPiece, Unigram), a normalizer, a pre-tokenizer other than a Split pattern with ByteLevel
  // (or a ByteLevel with its own pattern), a merge naming a token not in the vocabulary, ids that
  // are not 0..n-1 each once, a missing byte token, no BOS or EOS, or malformed JSON.
  ByteBpe(const std::string& json_text, const std::string& config_text, const std::string& name);
  ~ByteBpe();
  ByteBpe(const ByteBpe&) = delete;
  ByteBpe& operator=(const ByteBpe&) = delete;

  std::vector<int32_t> encode(std::string_view text) const;
  // The bytes of the tokens; special tokens (BOS, EOS, any added token marked special) give none.
  std::string decode(const std::vector<int32_t>& ids) const;

  int vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  bool adds_bos() const;           // the post-processor puts BOS first
  size_t max_token_bytes() const;  // the most bytes one token stands for
  // The name llama.cpp gives this pre-tokenizer (tokenizer.ggml.pre): "llama-bpe" for Llama 3's
  // pattern with ignore_merges, "gpt-2" for GPT-2's without; empty for any other.
  std::string llama_cpp_pre() const;

  // For GGUF: every token as tokenizer.json spells it (the byte-level alphabet; added tokens as
  // they are), its llama.cpp type (1 normal, 3 control: a special added token, 4 user-defined:
  // another added token), and the merges as "left right", in rank order.
  std::vector<std::string> spellings() const;
  std::vector<int32_t> token_types() const;
  std::vector<std::string> merges() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The pre-tokenizer patterns of Llama 3's tokenizer.json (a Split) and GPT-2's (its ByteLevel's).
extern const char* const kLlama3SplitPattern;
extern const char* const kGpt2Pattern;

}  // namespace parallama
