#pragma once
// The tokenizer: a sentencepiece BPE model with byte fallback (any byte sequence encodes, so no
// text is ever lost to an unknown token). Ids: 0 unk, 1 bos, 2 eos, as in Llama 2.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace parallama {

class Tokenizer {
 public:
  // Trains a BPE model on `sentences` (deterministic: one thread, no sampling) and returns the
  // serialized model. Throws Error when the vocabulary cannot be reached.
  static std::string train(const std::vector<std::string>& sentences, int vocab_size);

  explicit Tokenizer(const std::string& model_path);  // throws Error naming the file
  ~Tokenizer();
  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  int vocab_size() const;
  int32_t bos_id() const { return 1; }
  int32_t eos_id() const { return 2; }
  uint64_t hash() const { return hash_; }  // FNV-1a of the model file, recorded in token shards

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  uint64_t hash_ = 0;
};

}  // namespace parallama
