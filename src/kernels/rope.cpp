#include "kernels/rope.h"
#include "tensor/profile.h"

#include <cmath>

namespace parallama::kernels {

void rope_table(float* cos, float* sin, int64_t T, int64_t D, float theta, int64_t pos0) {
  const int64_t half = D / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      // Same arithmetic as the reference: inv_freq in fp32, angle = position · inv_freq.
      const float inv_freq =
          1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(D));
      const float angle = static_cast<float>(pos0 + t) * inv_freq;
      cos[t * half + i] = std::cos(angle);
      sin[t * half + i] = std::sin(angle);
    }
}

namespace {

// sign = +1 rotates by +angle (forward), -1 by -angle (backward).
void rotate(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t NH,
            int64_t D, int64_t ld, float sign) {
  const int64_t half = D / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const float* c = cos + t * half;
      const float* s = sin + t * half;
      for (int64_t h = 0; h < NH; ++h) {
        float* v = x + (b * T + t) * ld + h * D;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], bb = v[i + half], si = sign * s[i];
          v[i] = a * c[i] - bb * si;
          v[i + half] = bb * c[i] + a * si;
        }
      }
    }
}

}  // namespace

void rope_forward(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t NH,
                  int64_t D, int64_t ld) {
  prof::KindScope scope(prof::Kind::rope);
  rotate(x, cos, sin, B, T, NH, D, ld, 1.0f);
}

void rope_backward(float* dx, const float* cos, const float* sin, int64_t B, int64_t T, int64_t NH,
                   int64_t D, int64_t ld) {
  prof::KindScope scope(prof::Kind::rope);
  rotate(dx, cos, sin, B, T, NH, D, ld, -1.0f);
}

}  // namespace parallama::kernels
