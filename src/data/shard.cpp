#include "data/shard.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/paths.h"
#include "tensor/error.h"

namespace parallama {

namespace {

constexpr size_t kHeaderBytes = 64;
constexpr uint64_t kMaxVocab = (uint64_t{1} << 31) - 1;  // token ids are int32

// The token width a vocabulary takes: 2 bytes up to 65536 ids, else 4.
uint32_t width_for(uint64_t vocab_size) {
  return vocab_size <= 65536 ? 2 : 4;
}

template <class T>
void put(std::vector<char>& buf, size_t at, T v) {
  std::memcpy(buf.data() + at, &v, sizeof(T));  // the formats are little-endian; so is x86-64
}

template <class T>
T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

void write_shard(const std::string& path, const std::vector<int32_t>& tokens, uint64_t vocab_size,
                 uint64_t tokenizer_hash) {
  if (vocab_size > kMaxVocab)
    throw Error(path + ": vocabulary size " + std::to_string(vocab_size) + " is above 2^31 - 1");
  const uint32_t width = width_for(vocab_size);
  std::vector<char> buf(kHeaderBytes + tokens.size() * width, 0);
  std::memcpy(buf.data(), ShardHeader::kMagic, 8);
  put<uint32_t>(buf, 8, ShardHeader::kVersion);
  put<uint32_t>(buf, 12, width);
  put<uint64_t>(buf, 16, tokens.size());
  put<uint64_t>(buf, 24, vocab_size);
  put<uint64_t>(buf, 32, tokenizer_hash);
  char* out = buf.data() + kHeaderBytes;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || static_cast<uint64_t>(tokens[i]) >= vocab_size)
      throw Error(path + ": token id " + std::to_string(tokens[i]) + " is outside the vocabulary");
    if (width == 2) {
      const uint16_t v = static_cast<uint16_t>(tokens[i]);
      std::memcpy(out + 2 * i, &v, 2);
    } else {
      const uint32_t v = static_cast<uint32_t>(tokens[i]);
      std::memcpy(out + 4 * i, &v, 4);
    }
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f.write(buf.data(), static_cast<std::streamsize>(buf.size())))
      throw Error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

namespace {

// The header of a shard of `size` bytes, checked against the size.
ShardHeader parse_header(const char* head, uint64_t size, const std::string& path) {
  if (size < kHeaderBytes) throw Error(path + ": too short for a token shard header");
  if (std::memcmp(head, ShardHeader::kMagic, 8) != 0)
    throw Error(path + ": not a token shard (bad magic); make one with `parallama prepare`");
  if (get<uint32_t>(head + 8) != ShardHeader::kVersion)
    throw Error(path + ": token shard version " + std::to_string(get<uint32_t>(head + 8)) +
                " is not supported (expected " + std::to_string(ShardHeader::kVersion) + ")");
  ShardHeader h;
  h.token_bytes = get<uint32_t>(head + 12);
  h.token_count = get<uint64_t>(head + 16);
  h.vocab_size = get<uint64_t>(head + 24);
  h.tokenizer_hash = get<uint64_t>(head + 32);
  const uint32_t w = h.token_bytes;
  if (w != 2 && w != 4) throw Error(path + ": token width " + std::to_string(w) + " is not 2 or 4");
  if (h.vocab_size > kMaxVocab)
    throw Error(path + ": vocabulary size " + std::to_string(h.vocab_size) +
                " is above 2^31 - 1 (token ids are 32-bit signed integers; corrupt header?)");
  if (w != width_for(h.vocab_size))
    throw Error(path + ": token width " + std::to_string(w) + " does not match the vocabulary of " +
                std::to_string(h.vocab_size) + " (expected " +
                std::to_string(width_for(h.vocab_size)) + "; corrupt header?)");
  if (h.token_count > (size - kHeaderBytes) / w || kHeaderBytes + h.token_count * w != size)
    throw Error(path + ": header says " + std::to_string(h.token_count) +
                " tokens but the file holds " + std::to_string((size - kHeaderBytes) / w) +
                " (truncated or corrupt)");
  return h;
}

// The ids of h.token_count tokens at raw, each checked to lie in [0, vocab_size).
std::vector<int32_t> decode_tokens(const char* raw, const ShardHeader& h, const std::string& path) {
  std::vector<int32_t> tokens(h.token_count);
  for (uint64_t i = 0; i < h.token_count; ++i) {
    const uint32_t v = h.token_bytes == 2 ? get<uint16_t>(raw + 2 * i) : get<uint32_t>(raw + 4 * i);
    if (v >= h.vocab_size)
      throw Error(path + ": token " + std::to_string(i) + " has id " + std::to_string(v) +
                  " outside the vocabulary of " + std::to_string(h.vocab_size));
    tokens[i] = static_cast<int32_t>(v);  // v < vocab_size ≤ 2^31 - 1
  }
  return tokens;
}

}  // namespace

TokenShard read_shard(const std::string& path) {
  check_input_file(path, "token shard", int64_t{1} << 50);  // mapped, not read whole
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error("cannot read token shard '" + path + "'");
  const auto size = static_cast<uint64_t>(f.tellg());
  if (size < kHeaderBytes) throw Error(path + ": too short for a token shard header");
  f.seekg(0);
  char head[kHeaderBytes];
  f.read(head, kHeaderBytes);
  TokenShard s;
  s.path = path;
  s.header = parse_header(head, size, path);
  std::vector<char> raw(s.header.token_count * s.header.token_bytes);
  f.read(raw.data(), static_cast<std::streamsize>(raw.size()));
  if (!f) throw Error(path + ": read failed");
  s.tokens = decode_tokens(raw.data(), s.header, path);
  return s;
}

TokenShard parse_shard(const char* data, size_t size, const std::string& path) {
  TokenShard s;
  s.path = path;
  s.header = parse_header(data, size, path);
  s.tokens = decode_tokens(data + kHeaderBytes, s.header, path);
  return s;
}

}  // namespace parallama
