#pragma once
// Where whole tensors are read from, by name: one safetensors file (SafeTensorsReader), or the
// pieces that every rank of a run wrote of each tensor (PieceSource, io/pieces.h). Readers of
// model weights and optimizer state (loading a checkpoint into any layout, converting one to
// Hugging Face or GGUF) take a TensorSource and need not know which.
#include <map>
#include <string>

#include "tensor/tensor.h"

namespace parallama::io {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range [begin, end) within a file's data region (if one)
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual bool has(const std::string& name) const = 0;
  // Throws Error naming the source and the tensor if there is no tensor `name`.
  virtual const TensorInfo& info(const std::string& name) const = 0;
  // Tensor `name` into dst (numel(expected_shape) floats) as fp32. Throws Error, showing both
  // shapes, unless the stored shape equals expected_shape exactly.
  virtual void read_f32(const std::string& name, float* dst, const Shape& expected_shape) const = 0;
  // The part [begin, begin + count) along `axis` of tensor `name` (stored shape exactly
  // expected_shape) into dst as fp32, reading only what holds it. dst: the slice's own shape,
  // row-major. Throws as read_f32, and for an axis or range outside the shape.
  virtual void read_f32_slice(const std::string& name, float* dst, const Shape& expected_shape,
                              int axis, int64_t begin, int64_t count) const = 0;
  virtual const std::map<std::string, std::string>& metadata() const = 0;
  // What errors name: the file, or the index of the pieces.
  virtual const std::string& path() const = 0;
};

}  // namespace parallama::io
