#pragma once
// RMSNorm: out = x · rsqrt(mean(x²) + eps) · w.
#include <cstdint>

#include "kernels/matmul.h"

namespace parallama::kernels {

// out (N, C), rstd (N) saved for backward; x (N, C), w (C)
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C,
                     float eps);
// The same for mixed precision, where the output only feeds a matrix multiply: its fp32 values
// rounded to t as to_lowp rounds them, without an fp32 copy in memory.
void rmsnorm_forward_lowp(DType t, uint16_t* out, float* rstd, const float* x, const float* w,
                          int64_t N, int64_t C, float eps);

// dx (N, C) = (or += when accumulate_dx); dw (C) +=; dout (N, C), x (N, C), w (C), rstd (N)
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t C, bool accumulate_dx = false);
// The same, also writing dx's final values rounded to t (as to_lowp rounds them) to dx16 (N, C),
// for mixed precision where dx next feeds a matrix multiply: no second pass over dx.
void rmsnorm_backward_lowp(DType t, uint16_t* dx16, float* dx, float* dw, const float* dout,
                           const float* x, const float* w, const float* rstd, int64_t N, int64_t C,
                           bool accumulate_dx = false);

}  // namespace parallama::kernels
