#pragma once
// Reader and writer for the safetensors format (https://huggingface.co/docs/safetensors):
//   [u64 little-endian N][N bytes of UTF-8 JSON header][data region]
// Each header key (other than the optional string->string "__metadata__" map) describes one tensor:
//   {"dtype": "F32"|"BF16", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
// with offsets relative to the start of the data region. Only F32 and BF16 are supported; tensors
// are always handed to callers as fp32.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tensor/tensor.h"

namespace parallama::io {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range [begin, end) within the data region
};

// Reads the whole file into memory and validates the header and every tensor's byte range up
// front, so that later lookups and reads cannot fail on malformed input. Every failure throws
// parallama::Error with one line naming the file and the problem.
class SafeTensorsReader {
 public:
  explicit SafeTensorsReader(const std::string& path);

  // All tensors, ordered by their position in the data region.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // Throws Error naming the file and the tensor if there is no tensor `name`.
  const TensorInfo& info(const std::string& name) const;
  // Copies tensor `name` into dst (numel(expected_shape) floats) as fp32, widening BF16. Throws
  // Error, showing both shapes, unless the stored shape equals expected_shape exactly.
  void read_f32(const std::string& name, float* dst, const Shape& expected_shape) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void fail(const std::string& problem) const;
  void parse_header(const char* json, uint64_t len);
  void parse_entry(const std::string& name, const nlohmann::json& entry);
  void check_layout();

  std::string path_;
  std::vector<char> bytes_;  // the entire file
  uint64_t data_start_ = 0;  // offset of the data region within bytes_
  uint64_t data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Collects tensors and writes them in the order added. add() keeps only the `data` pointer (no
// copy): the caller must keep every added buffer alive and unchanged until write() returns.
// Conversion to BF16 (round to nearest even) happens during write(). The file is written to
// `path + ".tmp"`, flushed to disk and then renamed over `path`, so a crash never leaves a
// partially written file at `path`.
class SafeTensorsWriter {
 public:
  // Throws Error for an empty or duplicate name, the reserved name "__metadata__", negative
  // dims, or a null `data` for a non-empty tensor.
  void add(const std::string& name, const float* data, const Shape& shape,
           DType dtype = DType::F32);
  void set_metadata(std::map<std::string, std::string> m) { metadata_ = std::move(m); }
  // Throws Error naming the file on any I/O failure; the temporary file is removed then.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    const float* data;
    Shape shape;
    DType dtype;
    uint64_t numel;
  };
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace parallama::io
