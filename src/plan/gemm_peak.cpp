#include "plan/gemm_peak.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "kernels/matmul.h"
#include "tensor/arena.h"

namespace parallama {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double measure_gemm_peak(Precision p) {
  const int64_t n = 2048;
  Buffer a(n * n), b(n * n), c(n * n);
  for (int64_t i = 0; i < n * n; ++i)
    a.data()[i] = b.data()[i] = 0.001f * static_cast<float>(i % 97);
  std::vector<uint16_t> ah(n * n), bh(n * n);
  const DType t = p == Precision::fp32 ? DType::BF16 : operand_dtype(p);
  kernels::to_lowp(t, ah.data(), a.data(), n * n);
  kernels::to_lowp(t, bh.data(), b.data(), n * n);
  auto gemm = [&] {
    if (p == Precision::fp32)
      kernels::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    else
      kernels::gemm_lp(t, false, true, n, n, n, ah.data(), n, bh.data(), n, 0.0f, c.data(), n);
  };
  gemm();  // warm-up
  double best = 0.0;
  const auto start = std::chrono::steady_clock::now();
  for (int rep = 0; rep < 20 && (rep < 3 || seconds_since(start) < 2.0); ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    gemm();
    best = std::max(best, 2.0 * n * n * n / seconds_since(t0) / 1e9);
  }
  return best;
}

}  // namespace parallama
