#pragma once
// Matrix multiplies through oneDNN. Row-major throughout. Weights follow the Hugging Face
// convention (out_features, in_features), so a linear layer is y = x · wᵀ.
#include <cstdint>
#include <functional>

namespace parallama::kernels {

// c (M, N) = alpha · op(a) · op(b) + beta · c, op = transpose when the flag is set.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// y (N, O) = x (N, I) · w (O, I)ᵀ
void linear_forward(float* y, const float* x, const float* w, int64_t N, int64_t I, int64_t O);

// dx (N, I) = dy (N, O) · w (O, I), or += when accumulate_dx (dx may be null: not needed);
// dw (O, I) += dy (N, O)ᵀ · x (N, I).
void linear_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                     int64_t N, int64_t I, int64_t O, bool accumulate_dx = false);

// dw (O, I) += dy (N, O)ᵀ · x (N, I) in `chunks` blocks of rows of dw, calling between() after
// each block: a caller overlapping communication with this GEMM polls its request there.
void linear_backward_weight(float* dw, const float* dy, const float* x, int64_t N, int64_t I,
                            int64_t O, int chunks, const std::function<void()>& between);

}  // namespace parallama::kernels
