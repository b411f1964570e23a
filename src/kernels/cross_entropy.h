#pragma once
// Softmax cross-entropy fused over the vocabulary: the forward keeps only logsumexp per row, and
// the backward writes (softmax − one-hot) · dloss straight over the logits.
#include <cstdint>

#include "kernels/matmul.h"

namespace parallama::kernels {

constexpr int32_t kIgnoreIndex = -100;  // targets equal to this contribute no loss and no gradient

// losses (N): −log softmax(logits)[target], 0 for ignored rows; stats (N, 2) saved for backward:
// the row maximum m and log Σ exp(logit − m), kept apart so that large logits lose no precision.
// logits (N, V), targets (N)
void cross_entropy_forward(float* losses, float* stats, const float* logits, const int32_t* targets,
                           int64_t N, int64_t V);

// cross_entropy_forward for a pass that backward follows: it also writes exp(logit − m) over the
// logits, each computed once, so that the backward takes them with exps = true and needs no
// exponential of its own (the loss's exponentials are the larger part of its time).
void cross_entropy_forward_exps(float* losses, float* stats, float* logits, const int32_t* targets,
                                int64_t N, int64_t V);

// dlogits (N, V) = (softmax(logits) − onehot(target)) · dloss, 0 for ignored rows.
// dlogits may be the same memory as logits. With a vocabulary-parallel split, logits (N, Vl) are
// the columns [v0, v0 + Vl) and stats come from cross_entropy_finish. exps: logits holds what
// cross_entropy_forward_exps left there.
void cross_entropy_backward(float* dlogits, const float* logits, const float* stats,
                            const int32_t* targets, float dloss, int64_t N, int64_t V,
                            int64_t v0 = 0, bool exps = false);

// cross_entropy_backward then to_lowp_in_place, in one pass over the logits: the gradient, with
// the same fp32 values, rounded to t and written over the first half of the logits' bytes,
// which it returns as (N, V) 16-bit values.
uint16_t* cross_entropy_backward_lowp(DType t, float* logits, const float* stats,
                                      const int32_t* targets, float dloss, int64_t N, int64_t V,
                                      int64_t v0 = 0, bool exps = false);

// cross_entropy_forward_exps then cross_entropy_backward_lowp with dloss = 1, each row in one
// visit: the training forward of mixed precision, whose backward multiplies by dloss inside its
// matrix products. Writes the same losses and stats, and returns the first half of the logits'
// bytes as (N, V) 16-bit values of softmax − onehot (0 for ignored rows), the same bits as the
// two calls give. The logits are read once and the 16-bit gradient written once, where the two
// calls read them twice and write them twice.
uint16_t* cross_entropy_forward_grad_lowp(DType t, float* losses, float* stats, float* logits,
                                          const int32_t* targets, int64_t N, int64_t V);

// Vocabulary-parallel cross-entropy in three local steps around two reductions over the ranks
// that share the vocabulary; no rank ever holds a whole row of logits (N, V):
//   cross_entropy_local_max   mx (N) = max over this rank's columns      → reduce with max
//   cross_entropy_local_sums  part (N, 2) = [Σ exp(logit − mx), the target's logit when this
//                             rank holds its column, else 0]             → reduce with sum
//   cross_entropy_finish      losses (N) and stats (N, 2) as cross_entropy_forward gives them.
// logits (N, Vl) hold the columns [v0, v0 + Vl).
void cross_entropy_local_max(float* mx, const float* logits, int64_t N, int64_t Vl);
void cross_entropy_local_sums(float* part, const float* logits, const float* mx,
                              const int32_t* targets, int64_t N, int64_t Vl, int64_t v0);
void cross_entropy_finish(float* losses, float* stats, const float* mx, const float* part,
                          const int32_t* targets, int64_t N);

}  // namespace parallama::kernels
