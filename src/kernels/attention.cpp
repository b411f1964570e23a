#include "kernels/attention.h"

#include <cmath>
#include <vector>

#include "tensor/profile.h"

namespace parallama::kernels {

namespace {

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float* y, float a, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       const AttnDims& d) {
  prof::KindScope scope(prof::Kind::attention);
  const int64_t T = d.T, H = d.H, D = d.D, group = d.H / d.KVH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t kvh = h / group;
        const float* qt = q + (b * T + t) * d.ldq + h * D;
        float* p = att + ((b * H + h) * T + t) * T;
        float mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          p[j] = scale * dot(qt, k + (b * T + j) * d.ldkv + kvh * D, D);
          mx = std::fmax(mx, p[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        const float inv = 1.0f / sum;
        float* o = out + ((b * T + t) * H + h) * D;
        for (int64_t i = 0; i < D; ++i) o[i] = 0.0f;
        for (int64_t j = 0; j <= t; ++j) {
          p[j] *= inv;
          axpy(o, p[j], v + (b * T + j) * d.ldkv + kvh * D, D);
        }
        for (int64_t j = t + 1; j < T; ++j) p[j] = 0.0f;
      }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* att,
                        const float* q, const float* k, const float* v, const AttnDims& d) {
  prof::KindScope scope(prof::Kind::attention);
  const int64_t T = d.T, H = d.H, D = d.D, group = d.H / d.KVH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // One task per (batch, KV head): it owns dk and dv of that KV head, so no two threads write
  // the same memory, and the order of accumulation is fixed.
#pragma omp parallel
  {
    std::vector<float> dp(static_cast<size_t>(T));  // T floats a thread: small beside T² work
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t kvh = 0; kvh < d.KVH; ++kvh) {
        for (int64_t t = 0; t < T; ++t) {
          float* dkt = dk + (b * T + t) * d.ldkv + kvh * D;
          float* dvt = dv + (b * T + t) * d.ldkv + kvh * D;
          for (int64_t i = 0; i < D; ++i) dkt[i] = dvt[i] = 0.0f;
        }
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
          for (int64_t t = 0; t < T; ++t) {
            const float* p = att + ((b * H + h) * T + t) * T;
            const float* go = dout + ((b * T + t) * H + h) * D;
            const float* qt = q + (b * T + t) * d.ldq + h * D;
            float* dqt = dq + (b * T + t) * d.ldq + h * D;
            float s = 0.0f;  // Σ_j p_j · dp_j
            for (int64_t j = 0; j <= t; ++j) {
              dp[j] = dot(go, v + (b * T + j) * d.ldkv + kvh * D, D);
              s += p[j] * dp[j];
            }
            for (int64_t i = 0; i < D; ++i) dqt[i] = 0.0f;
            for (int64_t j = 0; j <= t; ++j) {
              const int64_t row = (b * T + j) * d.ldkv + kvh * D;
              const float ds = p[j] * (dp[j] - s) * scale;  // d(score before scaling)
              axpy(dqt, ds, k + row, D);
              axpy(dk + row, ds, qt, D);
              axpy(dv + row, p[j], go, D);
            }
          }
      }
  }
}

}  // namespace parallama::kernels
