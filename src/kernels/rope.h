#pragma once
// Rotary position embedding in the Hugging Face Llama convention: the head dimension is split in
// two halves, and element i pairs with element i + D/2 (rotate_half), not with its neighbour.
#include <cstdint>

namespace parallama::kernels {

// cos, sin (T, D/2) for positions pos0 .. pos0+T-1: angle(t, i) = t · theta^(-2i/D)
void rope_table(float* cos, float* sin, int64_t T, int64_t D, float theta, int64_t pos0 = 0);

// x (B, T, NH, D), rows of one token NH·D wide but ld floats apart; rotated in place.
// cos, sin (T, D/2)
void rope_forward(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t NH,
                  int64_t D, int64_t ld);

// dx (B, T, NH, D) with stride ld: the gradient w.r.t. the rotated values, turned in place into the
// gradient w.r.t. the values before rotation (the inverse rotation).
void rope_backward(float* dx, const float* cos, const float* sin, int64_t B, int64_t T, int64_t NH,
                   int64_t D, int64_t ld);

}  // namespace parallama::kernels
