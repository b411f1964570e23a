#pragma once
// Reader and writer for the safetensors format (https://huggingface.co/docs/safetensors):
//   [u64 little-endian N][N bytes of UTF-8 JSON header][data region]
// Each header key (other than the optional string->string "__metadata__" map) describes one tensor:
//   {"dtype": "F32"|"BF16"|"F16", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
// with offsets relative to the start of the data region. Only F32, BF16 and F16 are supported;
// tensors are always handed to callers as fp32.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "io/tensor_source.h"
#include "tensor/tensor.h"

namespace parallama::io {

// Reads the header and validates it and every tensor's byte range up front, so that later lookups
// cannot fail on malformed input; tensor data is read from the file on demand, straight into the
// caller's buffer, so the reader never holds the file (or a whole tensor) in memory. The file stays
// open while the reader lives. Every failure throws parallama::Error with one line naming the file
// and the problem.
class SafeTensorsReader : public TensorSource {
 public:
  explicit SafeTensorsReader(const std::string& path);
  ~SafeTensorsReader() override;
  SafeTensorsReader(const SafeTensorsReader&) = delete;
  SafeTensorsReader& operator=(const SafeTensorsReader&) = delete;

  // All tensors, ordered by their position in the data region.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool has(const std::string& name) const override { return index_.count(name) != 0; }
  // Throws Error naming the file and the tensor if there is no tensor `name`.
  const TensorInfo& info(const std::string& name) const override;
  // Copies tensor `name` into dst (numel(expected_shape) floats) as fp32, widening BF16 and F16
  // (exactly). Throws
  // Error, showing both shapes, unless the stored shape equals expected_shape exactly; throws Error
  // naming the tensor if the file has become shorter since it was opened.
  void read_f32(const std::string& name, float* dst, const Shape& expected_shape) const override;
  // Copies the part [begin, begin + count) along `axis` of tensor `name` (stored shape exactly
  // expected_shape) into dst as fp32, reading only those bytes. dst: the slice's own shape, i.e.
  // expected_shape with dim `axis` replaced by count, row-major. Throws as read_f32, and for an
  // axis or range outside the shape.
  void read_f32_slice(const std::string& name, float* dst, const Shape& expected_shape, int axis,
                      int64_t begin, int64_t count) const override;
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  const std::string& path() const override { return path_; }
  // The largest buffer this reader has allocated so far, in bytes (the header text, or a bounded
  // staging buffer for widening BF16 or F16): far below the file size, whatever the file holds.
  uint64_t peak_buffer_bytes() const { return peak_buffer_.load(); }

 private:
  [[noreturn]] void fail(const std::string& problem) const;
  void parse_header(const char* json, uint64_t len);
  void parse_entry(const std::string& name, const nlohmann::json& entry);
  void check_layout();
  void shape_must_be(const TensorInfo& t, const Shape& expected) const;
  // Reads n elements of t from element `first` on into dst, widening BF16, F16 through `stage`.
  void read_elements(const TensorInfo& t, uint64_t first, uint64_t n, float* dst,
                     std::vector<uint16_t>& stage) const;
  void read_bytes(uint64_t offset, void* dst, uint64_t n, const std::string& what) const;
  void note_buffer(uint64_t bytes) const;

  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;  // offset of the data region within the file
  uint64_t data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
  mutable std::atomic<uint64_t> peak_buffer_{0};
};

// One tensor of a file to be written: its name, shape and stored dtype.
struct TensorDecl {
  std::string name;
  Shape shape;
  DType dtype = DType::F32;
};

// Writes a safetensors file as a stream, holding no tensor: the header is computed up front from
// the declared names, shapes and dtypes (in file order), then the data arrives through append(),
// tensor after tensor, each in one piece or several. Bytes go to `path + ".tmp"`; commit() checks
// that every tensor is complete, flushes the file to disk and renames it over `path`. Destroyed
// without commit() (an error, an exception), it removes the temporary file, so a crash never
// leaves a partially written file at `path`.
class SafeTensorsStreamWriter {
 public:
  // Creates the temporary file and writes the header. Throws Error for an empty or duplicate
  // name, the reserved name "__metadata__", negative dims, more than 2^62 elements, a header that
  // cannot be encoded (names and metadata must be valid UTF-8) or a file that cannot be created.
  SafeTensorsStreamWriter(const std::string& path, const std::vector<TensorDecl>& tensors,
                          const std::map<std::string, std::string>& metadata = {});
  ~SafeTensorsStreamWriter();
  SafeTensorsStreamWriter(const SafeTensorsStreamWriter&) = delete;
  SafeTensorsStreamWriter& operator=(const SafeTensorsStreamWriter&) = delete;

  // Appends the next `count` elements of tensor `name` (data: count floats, converted to the
  // tensor's dtype, BF16 and F16 rounding to nearest even). `name` must be the first declared
  // tensor not yet complete. Throws Error naming the file for a tensor out of order, more elements
  // than the tensor holds, or a failed write.
  void append(const std::string& name, const float* data, int64_t count);
  // Throws Error naming the file if a tensor is incomplete or on any I/O failure.
  void commit();
  const std::string& path() const { return path_; }

 private:
  struct Out;
  std::string path_;
  std::unique_ptr<Out> out_;
  std::vector<TensorDecl> decls_;
  std::vector<uint64_t> numel_;
  std::map<std::string, size_t> index_;
  size_t cur_ = 0;        // the tensor being written
  uint64_t written_ = 0;  // elements of decls_[cur_] written so far
};

// Collects tensors and writes them in the order added, through a SafeTensorsStreamWriter. add()
// keeps only the `data` pointer (no copy): the caller must keep every added buffer alive and
// unchanged until write() returns.
class SafeTensorsWriter {
 public:
  // Throws Error for an empty or duplicate name, the reserved name "__metadata__", negative
  // dims, or a null `data` for a non-empty tensor.
  void add(const std::string& name, const float* data, const Shape& shape,
           DType dtype = DType::F32);
  void set_metadata(std::map<std::string, std::string> m) { metadata_ = std::move(m); }
  // Writes `path` atomically (see SafeTensorsStreamWriter). Throws Error naming the file on any
  // I/O failure; the temporary file is removed then.
  void write(const std::string& path) const;

 private:
  std::vector<TensorDecl> decls_;
  std::vector<const float*> data_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace parallama::io
