#include "kernels/rope.h"
#include "tensor/profile.h"

#include <cmath>
#include <numbers>
#include <vector>

namespace parallama::kernels {

void rope_inv_freq(float* inv_freq, int64_t D, float theta, const RopeScaling& scaling) {
  const bool llama3 = scaling.type == "llama3";
  const float old_len = static_cast<float>(scaling.original_max_len);
  const float low_wavelen = old_len / scaling.low_freq_factor;
  const float high_wavelen = old_len / scaling.high_freq_factor;
  for (int64_t i = 0; i < D / 2; ++i) {
    // Same arithmetic as the reference: inv_freq in fp32.
    const float f = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(D));
    inv_freq[i] = f;
    if (!llama3) continue;
    const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
    if (wavelen > low_wavelen) {
      inv_freq[i] = f / scaling.factor;
    } else if (!(wavelen < high_wavelen)) {
      const float s = (old_len / wavelen - scaling.low_freq_factor) /
                      (scaling.high_freq_factor - scaling.low_freq_factor);
      inv_freq[i] = (1.0f - s) * f / scaling.factor + s * f;
    }
  }
}

void rope_table(float* cos, float* sin, int64_t T, int64_t D, float theta, int64_t pos0,
                const RopeScaling& scaling) {
  const int64_t half = D / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  rope_inv_freq(inv_freq.data(), D, theta, scaling);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos0 + t) * inv_freq[i];  // position · inv_freq
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
