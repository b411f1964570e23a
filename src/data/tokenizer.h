#pragma once
// The tokenizer: a sentencepiece BPE model with byte fallback (any byte sequence encodes, so no
// text is ever lost to an unknown token). Ids: 0 unk, 1 bos, 2 eos, as in Llama 2.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/error.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace parallama {

// Thrown by Tokenizer::train when the text cannot give the vocabulary size asked for: `limit` is
// the largest size it can give (too_large) or the smallest it needs (!too_large).
class VocabSizeError : public Error {
 public:
  VocabSizeError(const std::string& what, bool too_large, int limit)
      : Error(what), too_large(too_large), limit(limit) {}
  bool too_large;
  int limit;
};

class Tokenizer {
 public:
  // Trains a BPE model on `sentences` (deterministic: one thread, no sampling) and returns the
  // serialized model. Throws VocabSizeError when the text cannot give `vocab_size` pieces, and
  // Error for any other failure.
  static std::string train(const std::vector<std::string>& sentences, int vocab_size);

  explicit Tokenizer(const std::string& model_path);  // throws Error naming the file

  // A model already read into memory; `name` (its file) is what errors name. Besides being a
  // sentencepiece model, it must use the ids above (0 unk, 1 bos, 2 eos).
  struct FromBytes {};
  static constexpr FromBytes from_bytes{};
  Tokenizer(FromBytes, const std::string& model_bytes, const std::string& name);

  ~Tokenizer();
  std::vector<int32_t> encode(const std::string& text) const;
  // The first n tokens of text, encoding only a prefix that is sure to hold them (twice the
  // bytes n of the longest pieces could cover, cut at a character boundary), so that a text of
  // megabytes costs what its first n tokens cost.
  std::vector<int32_t> encode_first(const std::string& text, int64_t n) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  int vocab_size() const;
  int32_t bos_id() const { return 1; }
  int32_t eos_id() const { return 2; }
  uint64_t hash() const { return hash_; }  // FNV-1a of the model file, recorded in token shards
  // The fewest tokens a text of `bytes` bytes can encode to (no piece covers more bytes than the
  // longest piece's spelling): a text too long for a context is refused without encoding it.
  int64_t min_tokens(size_t bytes) const {
    return static_cast<int64_t>((bytes + max_piece_bytes_ - 1) / max_piece_bytes_);
  }

 private:
  void load(const std::string& bytes, const std::string& name);

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  uint64_t hash_ = 0;
  size_t max_piece_bytes_ = 1;
};

}  // namespace parallama
