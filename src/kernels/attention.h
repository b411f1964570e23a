#pragma once
// Causal scaled dot-product attention with grouped-query heads: query head h reads KV head
// h / (H / KVH). Probabilities are kept for the backward pass.
#include <cstdint>

namespace parallama::kernels {

struct AttnDims {
  int64_t B, T, H, KVH, D;
  int64_t ldq;   // floats between consecutive tokens in q / dq (≥ H·D)
  int64_t ldkv;  // floats between consecutive tokens in k, v / dk, dv (≥ KVH·D)
  // Queries at positions past .. past+T-1 of their sequence, attending to keys 0 .. past+T-1:
  // k and v then hold past + T tokens per batch row (generation with a KV cache). Only the
  // memory-light forward (flash_attention.h) takes past > 0.
  int64_t past = 0;
};

// out (B, T, H, D) contiguous; att (B, H, T, T) softmax probabilities (row t uses columns ≤ t);
// q (B, T, H, D), k, v (B, T, KVH, D), strided as in dims
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       const AttnDims& d);

// dq (B, T, H, D), dk, dv (B, T, KVH, D) =, strided as in dims; dout (B, T, H, D) contiguous;
// att, q, k, v as saved by the forward
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* att,
                        const float* q, const float* k, const float* v, const AttnDims& d);

}  // namespace parallama::kernels
