#include "kernels/embedding.h"
#include "tensor/profile.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace parallama::kernels {

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N,
                       int64_t C) {
  prof::KindScope scope(prof::Kind::embedding);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(out + n * C, table + static_cast<int64_t>(tokens[n]) * C, C * sizeof(float));
}

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t C,
                       int64_t v0, int64_t Vl) {
  prof::KindScope scope(prof::Kind::embedding);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = static_cast<int64_t>(tokens[n]) - v0;
    if (row >= 0 && row < Vl)
      std::memcpy(out + n * C, table + row * C, C * sizeof(float));
    else
      std::memset(out + n * C, 0, C * sizeof(float));
  }
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C) {
  prof::KindScope scope(prof::Kind::embedding);
  embedding_backward(dtable, dout, tokens, N, C, 0, INT64_MAX);
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C, int64_t v0, int64_t Vl) {
  prof::KindScope scope(prof::Kind::embedding);
  // Repeated tokens hit the same row, so threads own column ranges rather than rows.
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t chunk = (C + nt - 1) / nt, c0 = std::min<int64_t>(C, t * chunk),
                  c1 = std::min<int64_t>(C, c0 + chunk);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t row = static_cast<int64_t>(tokens[n]) - v0;
      if (row < 0 || row >= Vl) continue;
      float* d = dtable + row * C;
      const float* g = dout + n * C;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) d[c] += g[c];
    }
  }
}

}  // namespace parallama::kernels
