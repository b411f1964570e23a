#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <regex>
#include <unordered_map>

#include "data/bpe.h"
#include "io/paths.h"
#include "tensor/error.h"
#include "tensor/hash.h"

namespace parallama {

namespace {

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

// A status's message without sentencepiece's source location and failed condition
// ("./src/trainer_interface.cc(660) [cond] message" gives "message").
std::string plain_message(const sentencepiece::util::Status& st) {
  std::string m = st.message();
  if (const size_t at = m.find(") ["); at != std::string::npos && m.rfind("./", 0) == 0) {
    const size_t end = m.find("] ", at);
    m = end == std::string::npos ? std::string() : m.substr(end + 2);
  }
  while (!m.empty() && (m.back() == ' ' || m.back() == '\n')) m.pop_back();
  return m;
}

}  // namespace

std::string Tokenizer::train(const std::vector<std::string>& sentences, int vocab_size) {
  if (sentences.empty()) throw Error("no text to train the tokenizer on");
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", "0.9999"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"split_digits", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"num_threads", "1"},  // deterministic merges: the same inputs give the same model bytes
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"max_sentence_length", "65536"},
      {"minloglevel", "2"},
  };
  VectorIterator it(sentences);
  std::string model;
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  if (!st.ok()) {
    // sentencepiece's advice names its own options; say what the vocabulary size can be instead.
    const std::string m = plain_message(st);
    std::smatch g;
    if (std::regex_search(m, g, std::regex(R"(value <= ([0-9]+))"))) {
      const int most = std::atoi(g[1].str().c_str());
      throw VocabSizeError("a vocabulary of " + std::to_string(vocab_size) +
                               " is more than this text can give: sentencepiece found at most " +
                               std::to_string(most) + " pieces",
                           true, most);
    }
    if (std::regex_search(m, g, std::regex(R"(required_chars\. [0-9]+ vs ([0-9]+))"))) {
      const int least = std::atoi(g[1].str().c_str());
      throw VocabSizeError("a vocabulary of " + std::to_string(vocab_size) +
                               " is too small for this text: its characters, the 256 byte "
                               "pieces and the 3 special pieces alone need " +
                               std::to_string(least),
                           false, least);
    }
    throw Error("tokenizer training failed: " + (m.empty() ? st.ToString() : m));
  }
  return model;
}

namespace {

std::string read_whole(const std::string& path) {
  std::ifstream in = open_input(path, "tokenizer", kMaxTokenizerBytes);
  return {(std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()};
}

}  // namespace

Tokenizer::Tokenizer(const std::string& model_path) {
  const std::vector<std::string> files = tokenizer_files(model_path);
  load(read_whole(files[0]), model_path, files.size() > 1 ? read_whole(files[1]) : "");
}

Tokenizer::Tokenizer(FromBytes, const std::string& model_bytes, const std::string& name,
                     const std::string& config_bytes) {
  load(model_bytes, name, config_bytes);
}

void Tokenizer::load(const std::string& bytes, const std::string& name, const std::string& config) {
  if (is_tokenizer_json(name)) {
    if (bytes.empty()) throw Error(name + " is empty, not a tokenizer.json");
    bpe_ = std::make_unique<ByteBpe>(bytes, config, name);
    bos_ = bpe_->bos_id();
    eos_ = bpe_->eos_id();
    max_piece_bytes_ = bpe_->max_token_bytes();
    hash_ = fnv1a64(config, fnv1a64(bytes));
    return;
  }
  sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  if (bytes.empty()) throw Error(name + " is empty, not a sentencepiece model");
  const auto st = sp_->LoadFromSerializedProto(bytes);
  if (!st.ok()) {
    const std::string m = plain_message(st);
    throw Error(name + " is not a sentencepiece model (" +
                (m.empty() ? std::string("it does not parse as one") : m) + ")");
  }
  // Every model read (prepare's, a checkpoint's, a converted one's): the special ids that
  // generate, tokenize, the shards and the GGUF and Hugging Face exports assume.
  if (sp_->unk_id() != 0 || sp_->bos_id() != bos_id() || sp_->eos_id() != eos_id())
    throw Error(name + ": this sentencepiece model has ids unk " + std::to_string(sp_->unk_id()) +
                ", bos " + std::to_string(sp_->bos_id()) + ", eos " +
                std::to_string(sp_->eos_id()) + "; parallama needs unk 0, bos 1, eos 2");
  hash_ = fnv1a64(bytes.data(), bytes.size());
  for (int id = 0; id < sp_->GetPieceSize(); ++id)
    max_piece_bytes_ = std::max(max_piece_bytes_, sp_->IdToPiece(id).size());
}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  if (bpe_) return bpe_->encode(text);
  std::vector<int> ids;
  const auto st = sp_->Encode(text, &ids);
  if (!st.ok()) throw Error("tokenizer could not encode text: " + st.ToString());
  return {ids.begin(), ids.end()};
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  if (bpe_) return bpe_->decode(ids);
  std::string out;
  const auto st = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &out);
  if (!st.ok()) throw Error("tokenizer could not decode ids: " + st.ToString());
  return out;
}

std::vector<int32_t> Tokenizer::encode_first(const std::string& text, int64_t n) const {
  size_t cut = static_cast<size_t>(std::max<int64_t>(n, 1)) * 2 * max_piece_bytes_ + 16;
  if (cut < text.size())  // back to the first byte of a character
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  std::vector<int32_t> ids = encode(cut < text.size() ? text.substr(0, cut) : text);
  if (static_cast<int64_t>(ids.size()) > n) ids.resize(static_cast<size_t>(n));
  return ids;
}

int Tokenizer::vocab_size() const {
  return bpe_ ? bpe_->vocab_size() : sp_->GetPieceSize();
}

}  // namespace parallama
