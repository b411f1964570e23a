// libFuzzer harness: a tokenizer.json (Llama 3's byte-level BPE) and a text. The input is the
// tokenizer.json's text, then (after a line "#text") the text to encode. The tokenizer is either
// refused with parallama::Error, or every id it gives for the text lies in its vocabulary and
// decoding gives the text back, unless the text holds an added token's content (decoding drops
// special tokens, and an added token may take the whitespace beside it).
#include <cstdint>
#include <string>

#include "data/bpe.h"
#include "data/bpe_vocab.h"
#include "fuzz_util.h"
#include "tensor/error.h"

namespace {

using parallama::fuzz::fail;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::string marker = "\n#text\n";
  const size_t at = input.find(marker);
  const std::string json = input.substr(0, at);
  const std::string text = at == std::string::npos ? "" : input.substr(at + marker.size());
  const std::string config = R"({"bos_token": "<s>", "eos_token": "</s>"})";
  try {
    const parallama::ByteBpe bpe(json, config, "tokenizer.json");
    const std::vector<int32_t> ids = bpe.encode(text);
    for (int32_t id : ids)
      if (id < 0 || id >= bpe.vocab_size())
        fail("id " + std::to_string(id) + " outside the vocabulary");
    if (bpe.decode(ids) == text) return 0;
    const std::vector<int32_t> types = bpe.token_types();
    const std::vector<std::string> spelled = bpe.spellings();
    for (size_t i = 0; i < types.size(); ++i)
      if (types[i] != 1 && text.find(spelled[i]) != std::string::npos) return 0;
    fail("decoding does not give the text back");
  } catch (const parallama::Error&) {
  }
  return 0;
}
