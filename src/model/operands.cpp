#include "model/operands.h"

#include "tensor/error.h"
#include "tensor/profile.h"

namespace parallama {

using namespace kernels;

Operands::Operands(Precision precision)
    : precision_(precision),
      type_(precision == Precision::fp32 ? DType::BF16 : operand_dtype(precision)) {}

void Operands::mm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, Operand a, int64_t lda,
                  Operand b, int64_t ldb, float beta, float* c, int64_t ldc, float alpha) const {
  if (lowp() && type_ == DType::BF16 && b.weight >= 0 && !ta) {
    Packed& p = packed_[{b.weight, tb}];
    const bool acc = beta != 0.0f;
    if (acc && alpha != 1.0f) throw Error("internal: a packed product scales only when it sets c");
    if (!p.gemm || !p.gemm->matches(tb, M, N, K, lda, ldb, ldc, acc))
      p.gemm = std::make_unique<PackedGemm>(tb, M, N, K, lda, ldb, ldc, acc), p.version = ~0ull;
    if (p.version != version_) p.gemm->pack(b.h), p.version = version_;
    p.gemm->run(a.h, c);
    if (alpha != 1.0f) {
      prof::KindScope scope(prof::Kind::other);
#pragma omp parallel for schedule(static) if (M * N > (int64_t{1} << 16))
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) c[i * ldc + j] *= alpha;
    }
  } else if (lowp()) {
    gemm_lp(type_, ta, tb, M, N, K, a.h, lda, b.h, ldb, beta, c, ldc, alpha, &widen_);
  } else
    gemm(ta, tb, M, N, K, alpha, a.f, lda, b.f, ldb, beta, c, ldc);
}

void Operands::linear_grads(int64_t N, float* dx, float* dw, Operand dy, Operand x, Operand w,
                            int64_t I, int64_t O) const {
  mm(false, false, N, I, O, dy, O, w, I, 0.0f, dx, I);  // dx (N, I) = dy (N, O) · w (O, I)
  mm(true, false, O, I, N, dy, O, x, I, 1.0f, dw, I);   // dw (O, I) += dyᵀ · x (N, I)
}

Operand Operands::weight(int64_t offset, const float* W) const {
  return lowp() ? Operand{nullptr, wlp_.data() + offset, offset} : Operand{W + offset, nullptr};
}

Operand Operands::operand(const float* x, int64_t n, uint16_t* into) const {
  if (!lowp()) return {x, nullptr};
  to_lowp(type_, into, x, n);
  return {nullptr, into};
}

void Operands::reserve(int64_t total) {
  if (lowp()) wlp_.resize(static_cast<size_t>(total));
}

void Operands::refresh(const float* W, const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  for (const auto& [off, n] : ranges) to_lowp(type_, wlp_.data() + off, W + off, n);
  ++version_;  // every packed copy is now stale
}

}  // namespace parallama
