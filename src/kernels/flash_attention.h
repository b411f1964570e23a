#pragma once
// Causal grouped-query attention that never holds the (B, H, T, T) probabilities: the forward
// walks the keys in blocks with a running (online) softmax and keeps only the log-sum-exp of
// each row; the backward recomputes the probabilities block by block from q, k and that
// log-sum-exp. Same layouts and head grouping as attention.h.
#include <cstdint>
#include <vector>

#include "kernels/attention.h"

namespace parallama::kernels {

// The attention kernels' working memory: a buffer per thread of the team that runs a call, owned
// by the caller, grown to the largest shape once and reused by every later call. One scratch
// serves one call at a time (calls made from several threads at once each pass their own).
class AttnScratch {
 public:
  // Before a parallel region of at most `threads` threads.
  void prepare(int threads);
  // Thread t's buffer of at least n values (inside the region; t below prepare's count).
  float* floats(int t, int64_t n);
  uint16_t* halves(int t, int64_t n);

 private:
  std::vector<std::vector<float>> f_;
  std::vector<std::vector<uint16_t>> h_;
};

// out (B, T, H, D) contiguous; lse (B, H, T): log Σ_{j ≤ past+t} exp(q_t·k_j / √D) per row, may
// be null when no backward follows; q (B, T, H, D), k, v (B, past + T, KVH, D), strided as in
// dims: query t is at position past + t and sees keys 0 .. past + t.
void flash_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                             const AttnDims& d, AttnScratch& s);

// dq (B, T, H, D), dk, dv (B, T, KVH, D) = (overwritten), strided as in dims; dout (B, T, H, D)
// contiguous; out, lse, q, k, v as given to and returned by the forward. One task per
// (batch, KV head) owns dk, dv of that head and dq of its query heads, so the result does not
// depend on the number of threads. dims.past must be 0.
void flash_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                              const float* lse, const float* q, const float* k, const float* v,
                              const AttnDims& d, AttnScratch& s);

// The same two passes with the tile products in bf16 (fp32 sums), for mixed precision: q, k, v,
// dout and each tile's probabilities and score gradients are rounded to bf16 as they enter a
// product; the softmax, lse, and the outputs and gradients stay fp32. Same arguments, results
// independent of the thread count; past must be 0. Only where the CPU has AVX-512 BF16:
bool flash_attention_bf16_available();
void flash_attention_forward_bf16(float* out, float* lse, const float* q, const float* k,
                                  const float* v, const AttnDims& d, AttnScratch& s);
void flash_attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout,
                                   const float* out, const float* lse, const float* q,
                                   const float* k, const float* v, const AttnDims& d,
                                   AttnScratch& s);

}  // namespace parallama::kernels
