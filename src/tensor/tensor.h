#pragma once
// Tensor: a non-owning view (pointer, shape, dtype). Shapes are small vectors of int64.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace parallama {

using Shape = std::vector<int64_t>;

inline int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s);

struct Tensor {
  void* data = nullptr;
  Shape shape;
  DType dtype = DType::F32;

  int64_t numel() const { return parallama::numel(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  float* f32() const { return static_cast<float*>(data); }
};

}  // namespace parallama
