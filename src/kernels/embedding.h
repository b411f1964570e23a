#pragma once
// Token embedding lookup. Token ids are checked against the vocabulary by the caller.
#include <cstdint>

namespace parallama::kernels {

// out (N, C) = table (V, C) [tokens (N)]
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t C);

// dtable (V, C) [tokens[n]] += dout (N, C) [n]
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C);

// Vocabulary-parallel forms: `table` holds the rows [v0, v0 + Vl) of the whole table (Vl, C).
// A token outside those rows gives a zero row (the rank that owns it supplies the values, and a
// sum over the ranks completes the lookup); backward skips it.
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t C,
                       int64_t v0, int64_t Vl);
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C, int64_t v0, int64_t Vl);

}  // namespace parallama::kernels
