#include "kernels/matmul.h"

#include <oneapi/dnnl/dnnl.h>

#include <string>

#include "tensor/error.h"
#include "tensor/profile.h"

namespace parallama::kernels {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (M == 0 || N == 0) return;
  prof::KindScope scope(prof::Kind::gemm);
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, a, lda, b,
                                ldb, beta, c, ldc);
  if (st != dnnl_success)
    throw Error("oneDNN sgemm failed with status " + std::to_string(static_cast<int>(st)) +
                " for M=" + std::to_string(M) + " N=" + std::to_string(N) +
                " K=" + std::to_string(K));
}

void linear_forward(float* y, const float* x, const float* w, int64_t N, int64_t I, int64_t O) {
  gemm(false, true, N, O, I, 1.0f, x, I, w, I, 0.0f, y, O);
}

void linear_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                     int64_t N, int64_t I, int64_t O, bool accumulate_dx) {
  if (dx) gemm(false, false, N, I, O, 1.0f, dy, O, w, I, accumulate_dx ? 1.0f : 0.0f, dx, I);
  if (dw) gemm(true, false, O, I, N, 1.0f, dy, O, x, I, 1.0f, dw, I);
}

}  // namespace parallama::kernels
