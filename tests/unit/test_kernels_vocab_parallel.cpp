// Vocabulary-parallel kernels: the embedding and the cross-entropy computed on column (or row)
// slices of the vocabulary and combined as the tensor-parallel reductions combine them (max,
// then sum) equal the scalar reference over the whole vocabulary.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/reference.h"
#include "test_util.h"

namespace parallama {

using test::randn;
using test::rel_err;
using test::to_double;

// Splits the columns of (N, V) into `parts` equal slices, computes each rank's pieces, reduces
// them across the simulated ranks and checks losses and gradients against the reference.
static void check_split(int parts, float scale, uint32_t seed) {
  const int64_t N = 7, Vl = 5, V = Vl * parts;
  auto logits = randn(N * V, seed, scale);
  std::vector<int32_t> tgt = {
      0, kernels::kIgnoreIndex, int32_t(V - 1), 4, int32_t(7 % V), int32_t(V / 2), 2};
  auto slice = [&](int r) {
    std::vector<float> s(N * Vl);
    for (int64_t n = 0; n < N; ++n) std::copy_n(&logits[n * V + r * Vl], Vl, &s[n * Vl]);
    return s;
  };
  std::vector<float> mx(N, -INFINITY), part(2 * N, 0.0f);
  for (int r = 0; r < parts; ++r) {  // all-reduce max
    std::vector<float> m(N);
    kernels::cross_entropy_local_max(m.data(), slice(r).data(), N, Vl);
    for (int64_t n = 0; n < N; ++n) mx[n] = std::max(mx[n], m[n]);
  }
  for (int r = 0; r < parts; ++r) {  // all-reduce sum
    std::vector<float> p(2 * N);
    kernels::cross_entropy_local_sums(p.data(), slice(r).data(), mx.data(), tgt.data(), N, Vl,
                                      r * Vl);
    for (int64_t i = 0; i < 2 * N; ++i) part[i] += p[i];
  }
  std::vector<float> loss(N), stats(2 * N);
  kernels::cross_entropy_finish(loss.data(), stats.data(), mx.data(), part.data(), tgt.data(), N);
  auto ld = to_double(logits);
  std::vector<double> lr(N), dr(N * V);
  ref::cross_entropy_forward(lr.data(), ld.data(), tgt.data(), N, V);
  ref::cross_entropy_backward(dr.data(), ld.data(), tgt.data(), 0.25, N, V);
  EXPECT_LT(rel_err(loss, lr), 1e-6);
  EXPECT_EQ(loss[1], 0.0f);
  std::vector<float> d(N * V);
  for (int r = 0; r < parts; ++r) {
    auto s = slice(r);
    kernels::cross_entropy_backward(s.data(), s.data(), stats.data(), tgt.data(), 0.25f, N, Vl,
                                    r * Vl);
    for (int64_t n = 0; n < N; ++n) std::copy_n(&s[n * Vl], Vl, &d[n * V + r * Vl]);
  }
  EXPECT_LT(rel_err(d, dr), 1e-6);
}

TEST(VocabParallel, CrossEntropyOverSlicesMatchesTheWholeVocabulary) {
  for (int parts : {1, 2, 3, 4}) check_split(parts, 3.0f, 80 + parts);
}

TEST(VocabParallel, CrossEntropyStableForHugeLogits) {
  check_split(4, 800.0f, 90);  // logits of several hundred: the max must come from all slices
}

TEST(VocabParallel, EmbeddingSlicesSumToTheWholeLookup) {
  const int64_t V = 12, C = 9, N = 8, parts = 3, Vl = V / parts;
  std::vector<int32_t> tok = {0, 11, 4, 4, 7, 3, 8, 11};
  auto table = randn(V * C, 91), dy = randn(N * C, 92);
  std::vector<float> whole(N * C), sum(N * C, 0.0f), dwhole(V * C, 0.0f), dsum(V * C, 0.0f);
  kernels::embedding_forward(whole.data(), tok.data(), table.data(), N, C);
  kernels::embedding_backward(dwhole.data(), dy.data(), tok.data(), N, C);
  for (int64_t r = 0; r < parts; ++r) {
    std::vector<float> out(N * C, 5.0f);  // overwritten, zero rows included
    kernels::embedding_forward(out.data(), tok.data(), table.data() + r * Vl * C, N, C, r * Vl, Vl);
    for (int64_t i = 0; i < N * C; ++i) sum[i] += out[i];
    kernels::embedding_backward(dsum.data() + r * Vl * C, dy.data(), tok.data(), N, C, r * Vl, Vl);
  }
  EXPECT_EQ(sum, whole);
  EXPECT_EQ(dsum, dwhole);
}

}  // namespace parallama
