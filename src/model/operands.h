#pragma once
// The one precision policy of the model's products: every GEMM operand is fp32, or (mixed
// precision, bf16 or fp16) a 16-bit copy. Activations are rounded once where they are made
// (the kernels' *_lowp variants) or here, on the way into a product; weights are rounded once
// per step into a 16-bit copy at their parameters' offsets, and in bf16 each weight's products
// run against a copy packed in oneDNN's blocked layout, repacked after each refresh. The sums
// are always fp32.
#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/matmul.h"
#include "model/config.h"

namespace parallama {

// A GEMM operand: fp32, or (mixed precision) its 16-bit copy.
struct Operand {
  const float* f = nullptr;
  const uint16_t* h = nullptr;
  int64_t weight = -1;  // a whole weight's offset in the parameters (bf16: multiplied packed)
  Operand at(int64_t off) const { return {f ? f + off : nullptr, h ? h + off : nullptr}; }
};

class Operands {
 public:
  explicit Operands(Precision precision);
  Precision precision() const { return precision_; }
  bool lowp() const { return precision_ != Precision::fp32; }
  DType type() const { return type_; }  // the 16-bit operands' type (mixed precision)

  // c (M, N) = alpha · op(a) · op(b) + beta · c (alpha on the fp32 sums; with a packed weight,
  // beta 0 or alpha 1).
  void mm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, Operand a, int64_t lda, Operand b,
          int64_t ldb, float beta, float* c, int64_t ldc, float alpha = 1.0f) const;
  // dx (N, I) = dy (N, O) · w (O, I); dw (O, I) += dyᵀ · x (N, I).
  void linear_grads(int64_t N, float* dx, float* dw, Operand dy, Operand x, Operand w, int64_t I,
                    int64_t O) const;
  // The weight at a parameter offset: W itself in fp32, else its 16-bit copy.
  Operand weight(int64_t offset, const float* W) const;
  // x (n values): itself in fp32, else rounded into `into` (16-bit scratch).
  Operand operand(const float* x, int64_t n, uint16_t* into) const;

  // Mixed precision: sizes the 16-bit copy for `total` parameters, then refresh() rounds the
  // ranges [offset, offset + n) of `params` into it (every packed copy is then stale).
  void reserve(int64_t total);
  void refresh(const float* params, const std::vector<std::pair<int64_t, int64_t>>& ranges);

 private:
  struct Packed {
    std::unique_ptr<kernels::PackedGemm> gemm;
    uint64_t version = 0;
  };
  Precision precision_;
  DType type_;
  std::vector<uint16_t> wlp_;  // mixed precision: 16-bit weights at the parameters' offsets
  // bf16: each weight's GEMMs (forward: transposed, input gradient: not) with the weight packed,
  // repacked on first use after each refresh of wlp_.
  mutable std::map<std::pair<int64_t, bool>, Packed> packed_;
  mutable kernels::WidenScratch widen_;  // fp16: the operands widened to fp32
  uint64_t version_ = 0;
};

}  // namespace parallama
