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

}  // namespace parallama::kernels
