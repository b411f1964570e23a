#include "kernels/swiglu.h"

#include <cmath>

#include "kernels/vec_math.h"
#include "tensor/profile.h"

namespace parallama::kernels {

void swiglu_forward(float* out, const float* gu, int64_t N, int64_t F) {
  prof::KindScope scope(prof::Kind::swiglu);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* g = gu + n * 2 * F;
    const float* u = g + F;
    float* o = out + n * F;
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) o[f] = g[f] / (1.0f + vexp(-g[f])) * u[f];
  }
}

void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int64_t F) {
  prof::KindScope scope(prof::Kind::swiglu);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* g = gu + n * 2 * F;
    const float* u = g + F;
    const float* d = dout + n * F;
    float* dg = dgu + n * 2 * F;
    float* du = dg + F;
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) {
      const float sig = 1.0f / (1.0f + vexp(-g[f]));
      const float silu = g[f] * sig;
      dg[f] = d[f] * u[f] * sig * (1.0f + g[f] * (1.0f - sig));
      du[f] = d[f] * silu;
    }
  }
}

}  // namespace parallama::kernels
