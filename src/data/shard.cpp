#include "data/shard.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "tensor/error.h"

namespace parallama {

namespace {

constexpr size_t kHeaderBytes = 64;

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
  const uint32_t width = vocab_size <= 65536 ? 2 : 4;
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

TokenShard read_shard(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error("cannot read token shard '" + path + "'");
  const auto size = static_cast<uint64_t>(f.tellg());
  if (size < kHeaderBytes) throw Error(path + ": too short for a token shard header");
  f.seekg(0);
  char head[kHeaderBytes];
  f.read(head, kHeaderBytes);
  if (std::memcmp(head, ShardHeader::kMagic, 8) != 0)
    throw Error(path + ": not a token shard (bad magic); make one with `parallama prepare`");
  TokenShard s;
  s.path = path;
  if (get<uint32_t>(head + 8) != ShardHeader::kVersion)
    throw Error(path + ": token shard version " + std::to_string(get<uint32_t>(head + 8)) +
                " is not supported (expected " + std::to_string(ShardHeader::kVersion) + ")");
  s.header.token_bytes = get<uint32_t>(head + 12);
  s.header.token_count = get<uint64_t>(head + 16);
  s.header.vocab_size = get<uint64_t>(head + 24);
  s.header.tokenizer_hash = get<uint64_t>(head + 32);
  const uint32_t w = s.header.token_bytes;
  if (w != 2 && w != 4) throw Error(path + ": token width " + std::to_string(w) + " is not 2 or 4");
  if (s.header.token_count > (size - kHeaderBytes) / w ||
      kHeaderBytes + s.header.token_count * w != size)
    throw Error(path + ": header says " + std::to_string(s.header.token_count) +
                " tokens but the file holds " + std::to_string((size - kHeaderBytes) / w) +
                " (truncated or corrupt)");
  std::vector<char> raw(s.header.token_count * w);
  f.read(raw.data(), static_cast<std::streamsize>(raw.size()));
  if (!f) throw Error(path + ": read failed");
  s.tokens.resize(s.header.token_count);
  for (uint64_t i = 0; i < s.header.token_count; ++i) {
    const uint32_t v =
        w == 2 ? get<uint16_t>(raw.data() + 2 * i) : get<uint32_t>(raw.data() + 4 * i);
    if (v >= s.header.vocab_size)
      throw Error(path + ": token " + std::to_string(i) + " has id " + std::to_string(v) +
                  " outside the vocabulary of " + std::to_string(s.header.vocab_size));
    s.tokens[i] = static_cast<int32_t>(v);
  }
  return s;
}

}  // namespace parallama
