#pragma once
// The element types, one vocabulary for every room: tensors and their files (safetensors spells
// them as dtype_name does), kernels (the low-precision operand types), and communication (what a
// collective moves, and what it puts on the wire). Settings that choose a type (model.precision,
// parallel.compress) keep their own names and map to these.
#include <cstddef>
#include <cstdint>

namespace parallama {

// I8 on the wire is blockwise: each block of at most 256 values travels as int8 with an fp32
// scale of its own (comm/wire_sum.cpp). I4 exists on the wire only (blocks of at most 64 values,
// two to a byte, an fp32 scale each): it has no whole size in bytes (dtype_size 0).
enum class DType : uint8_t { F32, BF16, F16, F64, I64, U64, U8, I8, I4 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
      return 4;
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::F64:
    case DType::I64:
    case DType::U64:
      return 8;
    case DType::U8:
    case DType::I8:
      return 1;
    case DType::I4:
      return 0;
  }
  return 0;
}

// As safetensors spells it: "F32", "BF16", "F16", "F64", "I64", "U64", "U8", "I8" (and "I4").
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::F64:
      return "F64";
    case DType::I64:
      return "I64";
    case DType::U64:
      return "U64";
    case DType::U8:
      return "U8";
    case DType::I8:
      return "I8";
    case DType::I4:
      return "I4";
  }
  return "?";
}

}  // namespace parallama
