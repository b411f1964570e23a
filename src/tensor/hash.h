#pragma once
// FNV-1a, 64 bits: the one hash behind file checksums, tokenizer and parameter fingerprints, and
// the per-tensor keys of the seeded initialisation. Not cryptographic.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace parallama {

inline constexpr uint64_t kFnv1a64Basis = 0xcbf29ce484222325ull;

// The hash of n bytes at data, continuing from h (pass a previous result to hash a stream in
// pieces: hashing a then b equals hashing their concatenation).
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1a64Basis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

inline uint64_t fnv1a64(std::string_view s, uint64_t h = kFnv1a64Basis) {
  return fnv1a64(s.data(), s.size(), h);
}

// A hash as written in files: 16 lowercase hex digits.
inline std::string hex16(uint64_t h) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

}  // namespace parallama
