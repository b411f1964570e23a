#pragma once
// Token embedding lookup. Token ids are checked against the vocabulary by the caller.
#include <cstdint>

namespace parallama::kernels {

// out (N, C) = table (V, C) [tokens (N)]
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t C);

// dtable (V, C) [tokens[n]] += dout (N, C) [n]
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C);

}  // namespace parallama::kernels
