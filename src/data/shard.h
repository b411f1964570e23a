#pragma once
// Token shards: a 64-byte header (magic, version, token width, token count, vocabulary size,
// tokenizer hash), then the tokens as little-endian unsigned integers of that width.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace parallama {

struct ShardHeader {
  static constexpr char kMagic[8] = {'P', 'L', 'L', 'A', 'M', 'A', 'T', 'K'};
  static constexpr uint32_t kVersion = 1;
  uint32_t token_bytes = 2;  // 2 (vocab ≤ 65536) or 4
  uint64_t token_count = 0;
  uint64_t vocab_size = 0;
  uint64_t tokenizer_hash = 0;
};

// Writes atomically (temporary file, then rename). Throws Error on I/O failure or an id ≥ vocab.
void write_shard(const std::string& path, const std::vector<int32_t>& tokens, uint64_t vocab_size,
                 uint64_t tokenizer_hash);

// A shard read fully into memory as int32 ids. Throws Error naming the file for a bad magic,
// version, width (not the one its vocabulary takes), a vocabulary above 2^31 - 1 (ids are
// int32), a size that disagrees with the header, or an id ≥ vocab_size: every id returned lies
// in [0, vocab_size).
struct TokenShard {
  ShardHeader header;
  std::vector<int32_t> tokens;
  std::string path;
};
TokenShard read_shard(const std::string& path);
// The same from a shard's bytes in memory (path names it in errors).
TokenShard parse_shard(const char* data, size_t size, const std::string& path);

}  // namespace parallama
