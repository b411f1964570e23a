#pragma once
// Softmax cross-entropy fused over the vocabulary: the forward keeps only logsumexp per row, and
// the backward writes (softmax − one-hot) · dloss straight over the logits.
#include <cstdint>

namespace parallama::kernels {

constexpr int32_t kIgnoreIndex = -100;  // targets equal to this contribute no loss and no gradient

// losses (N): −log softmax(logits)[target], 0 for ignored rows; stats (N, 2) saved for backward:
// the row maximum m and log Σ exp(logit − m), kept apart so that large logits lose no precision.
// logits (N, V), targets (N)
void cross_entropy_forward(float* losses, float* stats, const float* logits, const int32_t* targets,
                           int64_t N, int64_t V);

// dlogits (N, V) = (softmax(logits) − onehot(target)) · dloss, 0 for ignored rows.
// dlogits may be the same memory as logits.
void cross_entropy_backward(float* dlogits, const float* logits, const float* stats,
                            const int32_t* targets, float dloss, int64_t N, int64_t V);

}  // namespace parallama::kernels
