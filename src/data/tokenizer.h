#pragma once
// The tokenizer: a sentencepiece BPE model with byte fallback (tokenizer.model: what prepare
// trains, and Llama 1 and 2's; ids 0 unk, 1 bos, 2 eos), or a byte-level BPE (tokenizer.json, with
// the tokenizer_config.json beside it: Llama 3's; data/bpe.h). Either encodes any byte sequence, so
// no text is ever lost to an unknown token.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/error.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace parallama {

class ByteBpe;

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

  // A tokenizer.model, or a tokenizer.json (a path ending in .json) and the tokenizer_config.json
  // beside it when there is one. Throws Error naming the file.
  explicit Tokenizer(const std::string& model_path);

  // A model already read into memory; `name` (its file) is what errors name and, by its ending
  // (.json), says which kind it is. A sentencepiece model must use the ids above (0 unk, 1 bos,
  // 2 eos); config_bytes is a tokenizer.json's tokenizer_config.json (empty: none).
  struct FromBytes {};
  static constexpr FromBytes from_bytes{};
  Tokenizer(FromBytes, const std::string& model_bytes, const std::string& name,
            const std::string& config_bytes = "");

  ~Tokenizer();
  std::vector<int32_t> encode(const std::string& text) const;
  // The first n tokens of text, encoding only a prefix that is sure to hold them (twice the
  // bytes n of the longest pieces could cover, cut at a character boundary), so that a text of
  // megabytes costs what its first n tokens cost.
  std::vector<int32_t> encode_first(const std::string& text, int64_t n) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  int vocab_size() const;
  int32_t bos_id() const { return bos_; }
  int32_t eos_id() const { return eos_; }
  // FNV-1a of the tokenizer's files (tokenizer_files, io/paths.h) in order, recorded in token
  // shards and checkpoints.
  uint64_t hash() const { return hash_; }
  const ByteBpe* byte_bpe() const { return bpe_.get(); }  // null for sentencepiece
  // The fewest tokens a text of `bytes` bytes can encode to (no piece covers more bytes than the
  // longest piece's spelling): a text too long for a context is refused without encoding it.
  int64_t min_tokens(size_t bytes) const {
    return static_cast<int64_t>((bytes + max_piece_bytes_ - 1) / max_piece_bytes_);
  }

 private:
  void load(const std::string& bytes, const std::string& name, const std::string& config);

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::unique_ptr<ByteBpe> bpe_;
  int32_t bos_ = 1, eos_ = 2;
  uint64_t hash_ = 0;
  size_t max_piece_bytes_ = 1;
};

}  // namespace parallama
