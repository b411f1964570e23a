// libFuzzer harness: the token-shard reader on arbitrary bytes, from memory (parse_shard) and
// from a file (read_shard), which must agree. Every id of an accepted shard lies in [0, vocab);
// written back with write_shard and read again, it gives the same header and tokens, and the
// same bytes but for the header's unused tail (bytes 40 to 63, which the writer zeroes).
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include "data/shard.h"
#include "fuzz_util.h"
#include "tensor/error.h"

namespace {

using parallama::Error;
using parallama::TokenShard;
using parallama::fuzz::fail;

bool same(const TokenShard& a, const TokenShard& b) {
  return a.header.token_bytes == b.header.token_bytes &&
         a.header.token_count == b.header.token_count &&
         a.header.vocab_size == b.header.vocab_size &&
         a.header.tokenizer_hash == b.header.tokenizer_hash && a.tokens == b.tokens;
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in = parallama::fuzz::scratch_path("in.bin");
  parallama::fuzz::write_bytes(in, data, size);
  std::optional<TokenShard> mem, file;
  std::string mem_error = "(accepted)", file_error = "(accepted)";
  try {
    mem = parallama::parse_shard(reinterpret_cast<const char*>(data), size, in);
  } catch (const Error& e) {
    mem_error = e.what();
  }
  try {
    file = parallama::read_shard(in);
  } catch (const Error& e) {
    file_error = e.what();
  }
  if (mem_error != file_error || (mem && !same(*mem, *file)))
    fail("parse_shard and read_shard disagree: " + mem_error + " | " + file_error);
  if (!mem) return 0;

  const TokenShard& s = *mem;
  if (s.tokens.size() != s.header.token_count) fail("token count differs from the header");
  for (const int32_t id : s.tokens)
    if (id < 0 || static_cast<uint64_t>(id) >= s.header.vocab_size)
      fail("id " + std::to_string(id) + " outside [0, " + std::to_string(s.header.vocab_size) +
           ")");

  const std::string out = parallama::fuzz::scratch_path("back.bin");
  TokenShard back;
  try {
    parallama::write_shard(out, s.tokens, s.header.vocab_size, s.header.tokenizer_hash);
    back = parallama::read_shard(out);
  } catch (const Error& e) {
    fail(std::string("an accepted shard does not write back: ") + e.what());
  }
  if (!same(s, back)) fail("the shard written back reads differently");
  std::string expected(reinterpret_cast<const char*>(data), size);
  std::memset(expected.data() + 40, 0, 24);
  if (file_bytes(out) != expected) fail("the shard written back has other bytes");
  return 0;
}
