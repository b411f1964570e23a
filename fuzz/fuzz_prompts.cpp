// libFuzzer harness: the prompts file of `generate --prompts` (infer/prompts.h), plain lines or
// JSON Lines, written to a scratch file and read. It is refused with parallama::Error, or every
// prompt is non-empty, the ids are distinct, the line numbers rise, and the batches planned over
// the prompts (any batch size) hold each prompt exactly once.
#include <cstdint>
#include <fstream>
#include <set>
#include <string>

#include "fuzz_util.h"
#include "infer/prompts.h"
#include "tensor/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using parallama::fuzz::fail;
  const std::string path = parallama::fuzz::scratch_dir() + "/prompts.txt";
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  std::vector<parallama::Prompt> prompts;
  try {
    prompts = parallama::read_prompts(path);
  } catch (const parallama::Error&) {
    return 0;
  }
  if (prompts.empty()) fail("a prompts file was accepted with no prompt");
  std::set<std::string> ids;
  int64_t line = 0;
  std::vector<int64_t> lengths;
  for (const parallama::Prompt& p : prompts) {
    if (p.text.empty()) fail("an empty prompt was accepted at line " + std::to_string(p.line));
    if (!ids.insert(p.id.dump()).second) fail("the id " + p.id.dump() + " was accepted twice");
    if (p.line <= line) fail("line numbers do not rise at " + std::to_string(p.line));
    line = p.line;
    lengths.push_back(static_cast<int64_t>(p.text.size() % 97) + 1);
  }
  for (int64_t batch : {1, 3, 8}) {
    std::vector<int> seen(prompts.size(), 0);
    for (const auto& b : parallama::plan_batches(lengths, batch)) {
      if (b.empty() || static_cast<int64_t>(b.size()) > batch) fail("a batch of a wrong size");
      for (int64_t i : b) ++seen.at(static_cast<size_t>(i));
    }
    for (int n : seen)
      if (n != 1) fail("a prompt is planned " + std::to_string(n) + " times");
  }
  return 0;
}
