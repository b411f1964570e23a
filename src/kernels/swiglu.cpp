#include "kernels/swiglu.h"

#include <algorithm>
#include <cmath>

#include "kernels/vec_math.h"
#include "tensor/profile.h"

namespace parallama::kernels {

namespace {

// The element-wise steps, over m columns of one row: the fp32 kernels and the 16-bit ones run
// the same loops, so their fp32 values are the same before rounding.
void forward_piece(float* o, const float* g, const float* u, int64_t m) {
#pragma omp simd
  for (int64_t f = 0; f < m; ++f) o[f] = g[f] / (1.0f + vexp(-g[f])) * u[f];
}

void backward_piece(float* dg, float* du, const float* d, const float* g, const float* u,
                    int64_t m) {
#pragma omp simd
  for (int64_t f = 0; f < m; ++f) {
    const float sig = 1.0f / (1.0f + vexp(-g[f]));
    const float silu = g[f] * sig;
    dg[f] = d[f] * u[f] * sig * (1.0f + g[f] * (1.0f - sig));
    du[f] = d[f] * silu;
  }
}

constexpr int64_t kStage = 512;  // columns staged in fp32 on the stack before rounding

}  // namespace

void swiglu_forward(float* out, const float* gu, int64_t N, int64_t F) {
  prof::KindScope scope(prof::Kind::swiglu);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) forward_piece(out + n * F, gu + n * 2 * F, gu + n * 2 * F + F, F);
}

void swiglu_forward_lowp(DType t, uint16_t* out, const float* gu, int64_t N, int64_t F) {
  prof::KindScope scope(prof::Kind::swiglu);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    alignas(64) float o[kStage];
    const float* g = gu + n * 2 * F;
    for (int64_t f0 = 0; f0 < F; f0 += kStage) {
      const int64_t m = std::min(kStage, F - f0);
      forward_piece(o, g + f0, g + F + f0, m);
      to_lowp_serial(t, out + n * F + f0, o, m);
    }
  }
}

void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int64_t F) {
  prof::KindScope scope(prof::Kind::swiglu);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* g = gu + n * 2 * F;
    float* dg = dgu + n * 2 * F;
    backward_piece(dg, dg + F, dout + n * F, g, g + F, F);
  }
}

void swiglu_backward_lowp(DType t, uint16_t* dgu, const float* dout, const float* gu, int64_t N,
                          int64_t F) {
  prof::KindScope scope(prof::Kind::swiglu);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    alignas(64) float dg[kStage], du[kStage];
    const float* g = gu + n * 2 * F;
    uint16_t* h = dgu + n * 2 * F;
    for (int64_t f0 = 0; f0 < F; f0 += kStage) {
      const int64_t m = std::min(kStage, F - f0);
      backward_piece(dg, du, dout + n * F + f0, g + f0, g + F + f0, m);
      to_lowp_serial(t, h + f0, dg, m);
      to_lowp_serial(t, h + F + f0, du, m);
    }
  }
}

}  // namespace parallama::kernels
