#pragma once
// Rotary position embedding in the Hugging Face Llama convention: the head dimension is split in
// two halves, and element i pairs with element i + D/2 (rotate_half), not with its neighbour.
#include <cstdint>
#include <string>

#include "kernels/matmul.h"
#include "tensor/names.h"

namespace parallama::kernels {

// Rescaled rotary frequencies for contexts longer than the model was pre-trained on. "llama3"
// (Llama 3.1): with wavelength w_i = 2π / f_i of the plain frequency f_i = theta^(-2i/D),
//   w_i < original_max_len / high_freq_factor: f_i unchanged (high frequencies),
//   w_i > original_max_len / low_freq_factor:  f_i / factor (low frequencies),
//   otherwise, with s = (original_max_len / w_i - low_freq_factor) /
//                       (high_freq_factor - low_freq_factor):
//     (1 - s) · f_i / factor + s · f_i (a smooth blend in between).
// "none" keeps every f_i.
enum class RopeType { none, llama3 };
constexpr std::array<Named<RopeType>, 2> names(RopeType) {
  return {{{RopeType::none, "none"}, {RopeType::llama3, "llama3"}}};
}
// "none" | "llama3"; anything else is an Error "rope_scaling 'NAME' is not supported (none or
// llama3)".
RopeType parse_rope_type(const std::string& name);
const char* rope_type_name(RopeType t);

struct RopeScaling {
  RopeType type = RopeType::none;
  float factor = 8.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_len = 8192;
};

// inv_freq (D/2): the rotary frequency of each pair (i, i + D/2), scaled as `scaling` says.
void rope_inv_freq(float* inv_freq, int64_t D, float theta, const RopeScaling& scaling = {});

// cos, sin (T, D/2) for positions pos0 .. pos0+T-1: angle(t, i) = t · inv_freq(i), with
// inv_freq(i) = theta^(-2i/D) rescaled by `scaling`.
void rope_table(float* cos, float* sin, int64_t T, int64_t D, float theta, int64_t pos0 = 0,
                const RopeScaling& scaling = {});

// x (B, T, NH, D), rows of one token NH·D wide but ld floats apart; rotated in place.
// cos, sin (T, D/2)
void rope_forward(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t NH,
                  int64_t D, int64_t ld);

// dx (B, T, NH, D) with stride ld: the gradient w.r.t. the rotated values, turned in place into the
// gradient w.r.t. the values before rotation (the inverse rotation).
void rope_backward(float* dx, const float* cos, const float* sin, int64_t B, int64_t T, int64_t NH,
                   int64_t D, int64_t ld);

// Mixed precision's attention backward: dqkv (B, T, ld) holds rows of [q (H·D) | k (KVH·D) | the
// rest], ld = H·D + KVH·D + the rest. rope_backward over q and k, then every row rounded whole to
// t into out (B, T, ld), each row while it is in cache: the same values and bits as the two
// rope_backward calls and to_lowp of the rows.
void rope_backward_lowp(DType t, uint16_t* out, float* dqkv, const float* cos, const float* sin,
                        int64_t B, int64_t T, int64_t H, int64_t KVH, int64_t D, int64_t ld);

}  // namespace parallama::kernels
