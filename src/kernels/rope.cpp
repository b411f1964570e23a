#include "kernels/rope.h"
#include "tensor/error.h"
#include "tensor/profile.h"

#include <cmath>
#include <numbers>
#include <vector>

namespace parallama::kernels {

RopeType parse_rope_type(const std::string& name) {
  if (const auto t = value_named<RopeType>(name)) return *t;
  throw Error("rope_scaling '" + name + "' is not supported (none or llama3)");
}

const char* rope_type_name(RopeType t) {
  return name_of(t);
}

void rope_inv_freq(float* inv_freq, int64_t D, float theta, const RopeScaling& scaling) {
  const bool llama3 = scaling.type == RopeType::llama3;
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

// One token's NH heads at x, by the angles of its position (c, s: D/2 each); sign = +1 rotates
// by +angle (forward), -1 by -angle (backward).
void rotate_heads(float* x, const float* c, const float* s, int64_t NH, int64_t D, float sign) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < NH; ++h) {
    float* v = x + h * D;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], bb = v[i + half], si = sign * s[i];
      v[i] = a * c[i] - bb * si;
      v[i + half] = bb * c[i] + a * si;
    }
  }
}

void rotate(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t NH,
            int64_t D, int64_t ld, float sign) {
  const int64_t half = D / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      rotate_heads(x + (b * T + t) * ld, cos + t * half, sin + t * half, NH, D, sign);
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

void rope_backward_lowp(DType t, uint16_t* out, float* dqkv, const float* cos, const float* sin,
                        int64_t B, int64_t T, int64_t H, int64_t KVH, int64_t D, int64_t ld) {
  prof::KindScope scope(prof::Kind::rope);
  const int64_t half = D / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = 0; p < T; ++p) {
      float* row = dqkv + (b * T + p) * ld;
      const float *c = cos + p * half, *s = sin + p * half;
      rotate_heads(row, c, s, H, D, -1.0f);
      rotate_heads(row + H * D, c, s, KVH, D, -1.0f);
      to_lowp_serial(t, out + (b * T + p) * ld, row, ld);
    }
}

}  // namespace parallama::kernels
