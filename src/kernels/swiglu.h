#pragma once
// SwiGLU: out = silu(gate) · up, with gate and up side by side in one row (one GEMM makes both).
#include <cstdint>

namespace parallama::kernels {

// out (N, F); gu (N, 2F) = [gate (F) | up (F)] per row
void swiglu_forward(float* out, const float* gu, int64_t N, int64_t F);

// dgu (N, 2F) =; dout (N, F), gu (N, 2F)
void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int64_t F);

}  // namespace parallama::kernels
