// PowerSGD's three stages on one rank (the sums are then the identity): an exactly rank-r matrix
// comes back whole and leaves no residual, a matrix of higher rank does not, the warm start
// converges to the best rank-r approximation (Eckart-Young), and tensors it does not compress pass
// through exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "parallel/powersgd.h"
#include "test_util.h"

namespace parallama {

using test::TinyModel;

namespace {

// One step of the whole buffer on a group of one: residual = what the approximation dropped.
void step(PowerSgd& psgd, size_t buckets, ParamBuffer& g, std::vector<float>& residual) {
  for (size_t b = 0; b < buckets; ++b) {
    psgd.first(b, g.data());
    psgd.second(b, g.data(), residual.data());
    psgd.third(b, g.data());
  }
}

double norm(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return std::sqrt(s);
}

// M (rows × cols) = Σ_k a_k b_kᵀ over `rank` random pairs.
void fill_rank(float* M, int64_t rows, int64_t cols, int rank, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd;
  std::vector<float> a(static_cast<size_t>(rows * rank)), b(static_cast<size_t>(cols * rank));
  for (float& v : a) v = nd(gen);
  for (float& v : b) v = nd(gen);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double s = 0;
      for (int k = 0; k < rank; ++k) s += double(a[i * rank + k]) * b[j * rank + k];
      M[i * cols + j] = static_cast<float>(s);
    }
}

}  // namespace

TEST(PowerSgd, RecoversAnExactlyLowRankMatrixAndNoMore) {
  for (int r : {1, 2, 4}) {
    TinyModel m;
    const ParamSpec& w = m.layout.find("model.layers.0.mlp.gate_proj.weight");
    const ParamSpec& norm_w = m.layout.find("model.layers.0.input_layernorm.weight");
    ASSERT_TRUE(lowrank_compressed(w, r));
    ASSERT_FALSE(lowrank_compressed(norm_w, r));
    const auto buckets = grad_buckets(m.layout, m.layout.total());
    for (int extra : {0, 1}) {  // rank r: recovered; rank r + 1: not
      PowerSgd psgd(m.layout, r, buckets);
      m.grads.zero();
      fill_rank(m.grads.at(w), w.shape[0], w.shape[1], r + extra, 7 + r);
      for (int64_t i = 0; i < norm_w.numel; ++i) m.grads.at(norm_w)[i] = 0.25f * float(i) - 3.0f;
      const std::vector<float> before(m.grads.data(), m.grads.data() + m.grads.size());
      std::vector<float> residual(before.size(), 0.0f);
      step(psgd, buckets.size(), m.grads, residual);
      double diff = 0;
      for (int64_t i = 0; i < w.numel; ++i)
        diff = std::max(diff, double(std::fabs(m.grads.at(w)[i] - before[w.offset + i])));
      const double scale = norm(before.data() + w.offset, w.numel) / std::sqrt(double(w.numel));
      const double left = norm(residual.data() + w.offset, w.numel);
      if (extra == 0) {
        EXPECT_LT(diff, 1e-4 * scale) << "rank " << r;
        EXPECT_LT(left, 1e-4 * norm(before.data() + w.offset, w.numel)) << "rank " << r;
      } else {
        EXPECT_GT(left, 1e-2 * norm(before.data() + w.offset, w.numel)) << "rank " << r;
      }
      // Applied plus residual is what came in, element by element.
      for (int64_t i = 0; i < w.numel; ++i)
        ASSERT_NEAR(m.grads.at(w)[i] + residual[w.offset + i], before[w.offset + i], 1e-4 * scale);
      for (int64_t i = 0; i < norm_w.numel; ++i)  // not compressed: exact, no residual
        ASSERT_EQ(m.grads.at(norm_w)[i], before[norm_w.offset + i]);
      EXPECT_EQ(norm(residual.data() + norm_w.offset, norm_w.numel), 0.0);
    }
  }
}

// The same full-rank matrix step after step (no error feedback): the warm-started Q is a power
// iteration, so the error approaches the best rank-r approximation's, √(Σ_{k>r} s_k²), for
// M = U diag(s) Vᵀ built with known singular values s_k = 1 / (k + 1).
TEST(PowerSgd, WarmStartConvergesToTheBestApproximation) {
  TinyModel m;
  const ParamSpec& w = m.layout.find("model.layers.1.mlp.down_proj.weight");
  const int64_t rows = w.shape[0], cols = w.shape[1], n = std::min(rows, cols);
  const int r = 2;
  // Orthonormal columns: Gram-Schmidt of random vectors, in double.
  auto ortho = [](int64_t len, int64_t k, uint32_t seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> nd;
    std::vector<std::vector<double>> v(static_cast<size_t>(k), std::vector<double>(len));
    for (auto& c : v) {
      for (double& x : c) x = nd(gen);
    }
    for (size_t a = 0; a < v.size(); ++a) {
      for (size_t b = 0; b < a; ++b) {
        double d = 0;
        for (int64_t i = 0; i < len; ++i) d += v[a][i] * v[b][i];
        for (int64_t i = 0; i < len; ++i) v[a][i] -= d * v[b][i];
      }
      double s = 0;
      for (double x : v[a]) s += x * x;
      for (double& x : v[a]) x /= std::sqrt(s);
    }
    return v;
  };
  const auto U = ortho(rows, n, 11), V = ortho(cols, n, 12);
  std::vector<float> M(static_cast<size_t>(rows * cols));
  double best = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double s = 1.0 / double(k + 1);
    if (k >= r) best += s * s;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        M[i * cols + j] += static_cast<float>(s * U[k][i] * V[k][j]);
  }
  best = std::sqrt(best);
  const auto buckets = grad_buckets(m.layout, m.layout.total());
  PowerSgd psgd(m.layout, r, buckets);
  std::vector<float> residual(static_cast<size_t>(m.grads.size()), 0.0f);
  double first = 0, last = 0;
  for (int it = 0; it < 30; ++it) {
    m.grads.zero();
    std::copy(M.begin(), M.end(), m.grads.at(w));
    step(psgd, buckets.size(), m.grads, residual);
    const double err = norm(residual.data() + w.offset, w.numel);
    (it == 0 ? first : last) = err;
  }
  EXPECT_LT(last, 1.01 * best) << "after 30 warm-started steps; the first step's " << first;
  EXPECT_GE(last, 0.999 * best) << "better than the best rank-" << r << " approximation?";
  EXPECT_GT(first, 1.05 * best) << "one step already converged: the test shows nothing";
}

TEST(PowerSgd, CountsWhatTravels) {
  TinyModel m;
  for (int r : {1, 4}) {
    int64_t want = 0, state = 0;
    for (const ParamSpec& s : m.layout.specs()) {
      const bool low = s.shape.size() == 2 && std::min(s.shape[0], s.shape[1]) >= 2 * r &&
                       (s.kind == ParamKind::Matrix || s.kind == ParamKind::Embedding);
      want += low ? (s.shape[0] + s.shape[1]) * r : s.numel;
      state += low ? s.shape[1] * r : 0;
    }
    EXPECT_EQ(lowrank_wire_floats(m.layout, r), want);
    EXPECT_EQ(lowrank_state_floats(m.layout, r), state);
    EXPECT_LT(lowrank_wire_floats(m.layout, r), m.layout.total() / 4);
    PowerSgd psgd(m.layout, r, grad_buckets(m.layout, 1));
    EXPECT_EQ(static_cast<int64_t>(psgd.state().size()), state);
    EXPECT_THROW(psgd.set_state(std::vector<float>(3)), Error);
  }
}

}  // namespace parallama
