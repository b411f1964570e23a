#pragma once
// IEEE 754 binary16 (fp16) helpers in plain integer arithmetic: widening is exact, narrowing
// rounds to nearest even, overflows to ±inf beyond ±65504 and keeps NaN a (quiet) NaN.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace parallama {

constexpr float kF16Max = 65504.0f;  // the largest finite fp16

// Whether f is finite yet beyond fp16's range: |f| >= 65520, which rounds to ±inf (from 65504
// up to 65520 rounds to ±65504).
inline bool f16_overflows(float f) {
  return std::fabs(f) >= 65520.0f && std::isfinite(f);
}

// Each value of x[0, n) that f16_overflows becomes ±65504; every other value stays as it is.
inline void clamp_f16_overflow(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (f16_overflows(x[i])) x[i] = std::copysign(kF16Max, x[i]);
}

inline float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);  // inf, NaN (payload kept)
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else {
    const float sub = static_cast<float>(mant) * 0x1p-24f;  // zero or subnormal: exact
    std::memcpy(&u, &sub, 4);
    u |= sign;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (u >= 0x47800000u) return sign | 0x7c00u;  // |f| >= 2^16: inf
  if (u < 0x38800000u) {
    // |f| < 2^-14: an fp16 subnormal (or zero). Adding 0.5 puts the fp16 subnormal's last bit
    // (2^-24) at the last mantissa bit of the sum, so the float addition rounds to nearest even.
    float a;
    std::memcpy(&a, &u, 4);
    a += 0.5f;
    uint32_t r;
    std::memcpy(&r, &a, 4);
    return sign | static_cast<uint16_t>(r - 0x3f000000u);
  }
  // Normal: rebias the exponent, round the 13 dropped bits to nearest even (a carry into the
  // exponent is right, up to inf for values from 65520 on).
  const uint32_t odd = (u >> 13) & 1u;
  u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;
  return sign | static_cast<uint16_t>(u >> 13);
}

}  // namespace parallama
