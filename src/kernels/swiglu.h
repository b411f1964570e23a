#pragma once
// SwiGLU: out = silu(gate) · up, with gate and up side by side in one row (one GEMM makes both).
#include <cstdint>

#include "kernels/matmul.h"

namespace parallama::kernels {

// out (N, F); gu (N, 2F) = [gate (F) | up (F)] per row
void swiglu_forward(float* out, const float* gu, int64_t N, int64_t F);

// dgu (N, 2F) =; dout (N, F), gu (N, 2F)
void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int64_t F);

// The same, for mixed precision where the result only feeds a matrix multiply: its fp32 values
// rounded to t as to_lowp rounds them, without an fp32 copy in memory.
void swiglu_forward_lowp(DType t, uint16_t* out, const float* gu, int64_t N, int64_t F);
void swiglu_backward_lowp(DType t, uint16_t* dgu, const float* dout, const float* gu, int64_t N,
                          int64_t F);

}  // namespace parallama::kernels
