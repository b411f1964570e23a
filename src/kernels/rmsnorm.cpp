#include "kernels/rmsnorm.h"
#include "tensor/profile.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

namespace parallama::kernels {

namespace {

// One row's 1 / rms, and its output over columns [c0, c1) into o (o[0] is column c0): the fp32
// and the 16-bit kernels run the same loops, so their fp32 values are the same before rounding.
float row_rstd(const float* xr, int64_t C, float eps) {
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
  return 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
}

void row_out(float* o, const float* xr, const float* w, float r, int64_t c0, int64_t c1) {
#pragma omp simd
  for (int64_t c = c0; c < c1; ++c) o[c - c0] = xr[c] * r * w[c];
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C,
                     float eps) {
  prof::KindScope scope(prof::Kind::rmsnorm);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float r = row_rstd(x + n * C, C, eps);
    rstd[n] = r;
    row_out(out + n * C, x + n * C, w, r, 0, C);
  }
}

void rmsnorm_forward_lowp(DType t, uint16_t* out, float* rstd, const float* x, const float* w,
                          int64_t N, int64_t C, float eps) {
  prof::KindScope scope(prof::Kind::rmsnorm);
  constexpr int64_t kStage = 512;  // columns staged in fp32 on the stack before rounding
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float r = row_rstd(xr, C, eps);
    rstd[n] = r;
    alignas(64) float o[kStage];
    for (int64_t c0 = 0; c0 < C; c0 += kStage) {
      const int64_t c1 = std::min(C, c0 + kStage);
      row_out(o, xr, w, r, c0, c1);
      to_lowp_serial(t, out + n * C + c0, o, c1 - c0);
    }
  }
}

namespace {

// rmsnorm_backward, and with dx16 each row of dx rounded to lp there once it is final.
void backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
              const float* rstd, int64_t N, int64_t C, bool accumulate_dx, DType lp,
              uint16_t* dx16) {
  prof::KindScope scope(prof::Kind::rmsnorm);
#pragma omp parallel
  {
    // dx: rows split across threads.
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* g = dout + n * C;
      float* d = dx + n * C;
      const float r = rstd[n];
      float dot = 0.0f;  // Σ dout·w·x
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c) dot += g[c] * w[c] * xr[c];
      const float k = dot * r * r * r / static_cast<float>(C);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float v = g[c] * w[c] * r - xr[c] * k;
        d[c] = accumulate_dx ? d[c] + v : v;  // never reads dx otherwise (it may hold a NaN)
      }
      if (dx16) to_lowp_serial(lp, dx16 + n * C, d, C);
    }
    // dw: columns split across threads, rows summed in order (deterministic, race-free).
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t chunk = (C + nt - 1) / nt, c0 = std::min<int64_t>(C, t * chunk),
                  c1 = std::min<int64_t>(C, c0 + chunk);
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* g = dout + n * C;
      const float r = rstd[n];
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) dw[c] += g[c] * xr[c] * r;
    }
  }
}

}  // namespace

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t C, bool accumulate_dx) {
  backward(dx, dw, dout, x, w, rstd, N, C, accumulate_dx, DType::BF16, nullptr);
}

void rmsnorm_backward_lowp(DType t, uint16_t* dx16, float* dx, float* dw, const float* dout,
                           const float* x, const float* w, const float* rstd, int64_t N, int64_t C,
                           bool accumulate_dx) {
  backward(dx, dw, dout, x, w, rstd, N, C, accumulate_dx, t, dx16);
}

}  // namespace parallama::kernels
