#pragma once
// exp that vectorizes: inside `#pragma omp simd` loops the compiler turns it into AVX-512 code,
// where std::exp stays a scalar library call per element (glibc offers vector versions only
// under -ffast-math, which this project does not use). Cephes' single-precision method: exp(x) =
// 2^n · exp(r), n = round(x / ln 2), r = x − n·ln 2 in two parts (|r| ≤ ln 2 / 2), exp(r) by a
// degree-7 polynomial. Relative error within 2 ulp of the correctly rounded result over the whole
// range (tested against std::exp in double); exp(−inf) and anything below the smallest normal
// result give 0, above the largest finite give +inf, NaN stays NaN.
#include <bit>
#include <cstdint>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace parallama::kernels {

#pragma omp declare simd
inline float vexp(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kMagic = 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer
  constexpr float kMax = 88.7228391f, kMin = -87.3365447f;
  const float xc = x < kMin ? kMin : (x > kMax ? kMax : x);
  const float t = xc * kLog2e + kMagic;
  const float n = t - kMagic;
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n from n's bits in t: n + 127 in the exponent field (n in [-126, 128]: split in two).
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kMagic);
  const int32_t half = ni >> 1;
  const float s1 = std::bit_cast<float>((half + 127) << 23);
  const float s2 = std::bit_cast<float>((ni - half + 127) << 23);
  const float y = p * s1 * s2;
  return x != x ? x : (x < kMin ? 0.0f : (x > kMax ? __builtin_inff() : y));
}

#if defined(__AVX512F__)
// vexp of 16 values, the same bits as the compiler's vector vexp (its fused multiply-adds where
// it fuses them; tested), in about half its instructions: the power of two by one scalef where
// vexp assembles it from integer bits in two halves, and one select for each out-of-range case.
inline __m512 vexp16(__m512 x) {
  const __m512 kMin = _mm512_set1_ps(-87.3365447f), kMax = _mm512_set1_ps(88.7228391f);
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  // (the masked forms with every lane set: the plain ones leave GCC 12 warning of an unset
  // register inside its own header)
  const __mmask16 all = 0xffff;
  const __m512 xc = _mm512_mask_min_ps(x, all, _mm512_mask_max_ps(x, all, x, kMin), kMax);
  const __m512 n =
      _mm512_sub_ps(_mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f), magic), magic);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(r, _mm512_mul_ps(p, r), r), _mm512_set1_ps(1.0f));
  __m512 y = _mm512_mask_scalef_ps(p, all, p, n);
  y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, kMin, _CMP_LT_OQ), _mm512_setzero_ps());
  y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, kMax, _CMP_GT_OQ),
                         _mm512_set1_ps(__builtin_inff()));
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}
#endif

}  // namespace parallama::kernels
