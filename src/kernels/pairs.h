#pragma once
// Pairs of bf16 rows side by side: the operand layout of AVX-512 BF16 dot products (two values
// of the summed dimension in one 32-bit word), used by oneDNN's packed weights and the bf16
// attention tiles.
#include <cstdint>

#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

namespace parallama::kernels {

// out[2j] = r0[j], out[2j + 1] = r1[j] for j < n; a null row reads as zeros.
inline void interleave(uint16_t* out, const uint16_t* r0, const uint16_t* r1, int64_t n) {
  int64_t j = 0;
#if defined(__AVX512BW__)
  if (r0 && r1) {
    alignas(64) static const uint16_t lo_idx[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                                    37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                                    11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    const __m512i lo = _mm512_load_si512(lo_idx);
    const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    for (; j + 32 <= n; j += 32) {
      const __m512i a = _mm512_loadu_si512(r0 + j), b = _mm512_loadu_si512(r1 + j);
      _mm512_storeu_si512(out + 2 * j, _mm512_permutex2var_epi16(a, lo, b));
      _mm512_storeu_si512(out + 2 * j + 32, _mm512_permutex2var_epi16(a, hi, b));
    }
  }
#endif
  for (; j < n; ++j) {
    out[2 * j] = r0 ? r0[j] : uint16_t{0};
    out[2 * j + 1] = r1 ? r1[j] : uint16_t{0};
  }
}

}  // namespace parallama::kernels
