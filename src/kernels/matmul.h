#pragma once
// Matrix multiplies through oneDNN. Row-major throughout. Weights follow the Hugging Face
// convention (out_features, in_features), so a linear layer is y = x · wᵀ.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "tensor/dtype.h"

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

}  // namespace parallama::kernels

namespace parallama::kernels {

// --- Low precision: bf16 or fp16 storage (16-bit words), fp32 accumulation.
// bf16 multiplies go through oneDNN's matmul (AVX-512 BF16 / AMX where the CPU has them). fp16
// values are stored and rounded as fp16 (range ±65504: larger values become ±inf, exactly as on
// a GPU, which is what loss scaling is for); CPUs without fp16 matrix units multiply them after
// widening to fp32, which is exact, so the results equal an fp16 GEMM with fp32 accumulation.
// The type t of these functions is DType::BF16 or DType::F16.

// dst[i] = src[i] rounded to nearest even (fp16: ±inf beyond its range; NaN stays NaN).
void to_lowp(DType t, uint16_t* dst, const float* src, int64_t n);
void from_lowp(DType t, float* dst, const uint16_t* src, int64_t n);
// A dense rows × cols fp32 matrix rounded to 16 bits in place: returns buf as 16-bit values,
// rows × cols, dense (the first half of buf's bytes). No memory beside it.
uint16_t* to_lowp_in_place(DType t, float* buf, int64_t rows, int64_t cols);
// dst[i] = src[i] rounded, on the calling thread alone.
void to_lowp_serial(DType t, uint16_t* dst, const float* src, int64_t n);

// 16-bit row r lands on the bytes of fp32 rows up to r / 2, so row 0 goes alone, before this;
// then rows [a, 2a) go in parallel: they write over fp32 rows [a / 2, a), all done already.
// row(r, out, in) gets row r's fp32 values at in, its own to write over, and its 16-bit row at out.
template <class Row>
void narrow_rows_after_first(float* buf, int64_t rows, int64_t cols, Row&& row) {
  uint16_t* out = reinterpret_cast<uint16_t*>(buf);
  for (int64_t a = 1; a < rows; a *= 2) {
    const int64_t end = std::min(rows, 2 * a);
#pragma omp parallel for schedule(static) if (end - a > 1)
    for (int64_t r = a; r < end; ++r) row(r, out + r * cols, buf + r * cols);
  }
}

// The walk behind to_lowp_in_place, for kernels that fuse their own work into the rounding:
// piece(r, j, out, in, n) reads the fp32 values of row r, columns [j, j + n), at in and writes
// their n 16-bit values at out. Row 0 goes in pieces of kPiece copied out before they are
// written over. Returns buf as a dense rows × cols 16-bit matrix.
template <class Piece>
uint16_t* narrow_in_place(float* buf, int64_t rows, int64_t cols, Piece&& piece) {
  constexpr int64_t kPiece = 1024;
  uint16_t* out = reinterpret_cast<uint16_t*>(buf);
  if (rows > 0) {
    alignas(64) float in[kPiece];
    for (int64_t j = 0; j < cols; j += kPiece) {
      const int64_t n = std::min(kPiece, cols - j);
      std::memcpy(in, buf + j, n * sizeof(float));
      piece(int64_t{0}, j, out + j, in, n);
    }
  }
  narrow_rows_after_first(buf, rows, cols, [&](int64_t r, uint16_t* o, float* in) {
    piece(r, int64_t{0}, o, static_cast<const float*>(in), cols);
  });
  return out;
}

// narrow_in_place for kernels that need whole rows: row(r, out, in) reads row r's fp32 values
// at in, may write over them (scratch of its own), and writes its cols 16-bit values at out.
// Row 0 is handed over as a copy.
template <class Row>
uint16_t* narrow_rows_in_place(float* buf, int64_t rows, int64_t cols, Row&& row) {
  uint16_t* out = reinterpret_cast<uint16_t*>(buf);
  if (rows > 0) {
    std::unique_ptr<float[]> first(new float[cols]);
    std::memcpy(first.get(), buf, cols * sizeof(float));
    row(int64_t{0}, out, first.get());
  }
  narrow_rows_after_first(buf, rows, cols, row);
  return out;
}

// A bf16 GEMM c (M, N) = a (M, K) · op(b) (+ c when accumulating) whose b is a weight, kept
// in the blocked layout oneDNN's kernel reads fastest (its choice for these shapes): a weight is
// multiplied many times between updates, so it is rearranged once per update and every product
// skips the rearranging the plain layout costs inside the kernel. Same arguments as gemm_lp.
class PackedGemm {
 public:
  PackedGemm(bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
             bool accumulate);
  ~PackedGemm();
  PackedGemm(const PackedGemm&) = delete;
  PackedGemm& operator=(const PackedGemm&) = delete;
  bool matches(bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
               bool accumulate) const;
  // Takes b's values (bf16, laid out as gemm_lp takes them) into the packed copy.
  void pack(const uint16_t* b);
  void run(const uint16_t* a, float* c) const;
  int64_t bytes() const;  // of the packed copy
  // Whether pack() lays out a weight stored by rows itself (oneDNN's pairs-of-rows layouts, its
  // choice on CPUs with AVX-512 BF16) rather than through oneDNN's slower reorder.
  bool packs_pairs() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// fp16 products widen both operands to fp32 first (exact: every fp16 value and product is
// representable in fp32); the widened copies live here, owned by the caller and reused.
struct WidenScratch {
  std::vector<float> a, b;
};

// c (M, N) = alpha · op(a) · op(b) + beta · c with a, b in t (beta 0 or 1), c and the sums in
// fp32; alpha multiplies the fp32 sums. fp16 widens into `widen` (without one: into memory of
// this call's own).
void gemm_lp(DType t, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
             const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c,
             int64_t ldc, float alpha = 1.0f, WidenScratch* widen = nullptr);

}  // namespace parallama::kernels
