#include "parallel/powersgd.h"

#include <algorithm>
#include <cmath>

#include "kernels/matmul.h"
#include "tensor/error.h"

namespace parallama {

bool lowrank_compressed(const ParamSpec& s, int rank) {
  return (s.kind == ParamKind::Matrix || s.kind == ParamKind::Embedding) && s.shape.size() == 2 &&
         std::min(s.shape[0], s.shape[1]) >= 2 * int64_t{rank};
}

int64_t lowrank_wire_floats(const ParamLayout& layout, int rank) {
  int64_t n = 0;
  for (const ParamSpec& s : layout.specs())
    n += lowrank_compressed(s, rank) ? (s.shape[0] + s.shape[1]) * rank : s.numel;
  return n;
}

int64_t lowrank_state_floats(const ParamLayout& layout, int rank) {
  int64_t n = 0;
  for (const ParamSpec& s : layout.specs())
    if (lowrank_compressed(s, rank)) n += s.shape[1] * rank;
  return n;
}

PowerSgd::PowerSgd(const ParamLayout& layout, int rank, const std::vector<GradBucket>& buckets)
    : rank_(rank) {
  if (rank < 1) throw Error("parallel.powersgd_rank must be at least 1");
  for (const GradBucket& gb : buckets) {
    Bucket& b = buckets_.emplace_back();
    int64_t at = gb.begin;  // the bucket's floats not in a compressed tensor travel whole
    auto whole_to = [&](int64_t end) {
      if (end > at) b.whole.emplace_back(at, end), b.whole_floats += end - at;
    };
    for (const ParamSpec& s : layout.specs()) {
      if (s.offset < gb.begin || s.offset >= gb.end || !lowrank_compressed(s, rank)) continue;
      const Tensor t{s.offset, s.shape[0], s.shape[1], static_cast<int64_t>(q_.size()), b.p_floats};
      whole_to(s.offset);
      at = s.offset + s.numel;
      b.low.push_back(t);
      b.p_floats += t.rows * rank;
      b.q_floats += t.cols * rank;
      q_.resize(q_.size() + static_cast<size_t>(t.cols * rank));
      init_q(t);
    }
    whole_to(gb.end);
  }
}

// A fixed pseudo-random start in [-1, 1) (splitmix64 of the tensor's offset and the index): the
// same on every rank of a group.
void PowerSgd::init_q(const Tensor& t) {
  const int64_t n = t.cols * rank_;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = static_cast<uint64_t>(t.offset) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    q_[static_cast<size_t>(t.q_at + i)] =
        static_cast<float>(static_cast<double>(z >> 11) * 0x1p-52 - 1.0);
  }
}

void PowerSgd::set_state(const std::vector<float>& q) {
  if (q.size() != q_.size())
    throw Error("PowerSGD state of " + std::to_string(q.size()) + " values, not " +
                std::to_string(q_.size()));
  q_ = q;
}

std::vector<float>& PowerSgd::first(size_t i, const float* grads) {
  Bucket& b = buckets_[i];
  b.first.resize(static_cast<size_t>(b.p_floats + b.whole_floats));
  const int64_t r = rank_;
  for (const Tensor& t : b.low)  // P (rows × r) = M (rows × cols) · Q (cols × r)
    kernels::gemm(false, false, t.rows, r, t.cols, 1.0f, grads + t.offset, t.cols,
                  q_.data() + t.q_at, r, 0.0f, b.first.data() + t.p_at, r);
  float* at = b.first.data() + b.p_floats;
  for (const auto& [lo, hi] : b.whole) at = std::copy(grads + lo, grads + hi, at);
  return b.first;
}

namespace {

// The columns of P (rows × r, row-major) made orthonormal in place, in order (classical
// Gram-Schmidt, run twice for stability; sums in double). A column with nothing left becomes 0.
void orthonormalize(float* P, int64_t rows, int64_t r) {
  for (int64_t k = 0; k < r; ++k) {
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t j = 0; j < k; ++j) {
        double dot = 0;
        for (int64_t i = 0; i < rows; ++i) dot += double(P[i * r + j]) * P[i * r + k];
        for (int64_t i = 0; i < rows; ++i)
          P[i * r + k] = static_cast<float>(P[i * r + k] - dot * P[i * r + j]);
      }
    double sq = 0;
    for (int64_t i = 0; i < rows; ++i) sq += double(P[i * r + k]) * P[i * r + k];
    const double inv = sq > 1e-60 && std::isfinite(sq) ? 1.0 / std::sqrt(sq) : 0.0;
    for (int64_t i = 0; i < rows; ++i) P[i * r + k] = static_cast<float>(P[i * r + k] * inv);
  }
}

// out (rows × cols) = base - P Qᵀ (base null: P Qᵀ), P rows × r and Q cols × r row-major; each
// element's sum in the same order everywhere.
void outer(float* out, const float* base, const float* P, const float* Q, int64_t rows,
           int64_t cols, int64_t r) {
#pragma omp parallel for schedule(static) if (rows * cols > (int64_t{1} << 15))
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      float s = 0.0f;
      for (int64_t k = 0; k < r; ++k) s += P[i * r + k] * Q[j * r + k];
      out[i * cols + j] = base ? base[i * cols + j] - s : s;
    }
}

}  // namespace

std::vector<float>& PowerSgd::second(size_t i, float* grads, float* residual) {
  Bucket& b = buckets_[i];
  const float* at = b.first.data() + b.p_floats;
  for (const auto& [lo, hi] : b.whole) {
    std::copy(at, at + (hi - lo), grads + lo);
    at += hi - lo;
  }
  b.second.resize(static_cast<size_t>(b.q_floats));
  const int64_t r = rank_;
  int64_t q = 0;
  for (const Tensor& t : b.low) {
    float* P = b.first.data() + t.p_at;
    orthonormalize(P, t.rows, r);
    float* Q = b.second.data() + q;  // Q (cols × r) = Mᵀ (cols × rows) · P̂ (rows × r)
    kernels::gemm(true, false, t.cols, r, t.rows, 1.0f, grads + t.offset, t.cols, P, r, 0.0f, Q, r);
    outer(residual + t.offset, grads + t.offset, P, Q, t.rows, t.cols, r);
    q += t.cols * r;
  }
  return b.second;
}

void PowerSgd::third(size_t i, float* grads) {
  Bucket& b = buckets_[i];
  const int64_t r = rank_;
  int64_t q = 0;
  for (const Tensor& t : b.low) {
    const float* Q = b.second.data() + q;
    outer(grads + t.offset, nullptr, b.first.data() + t.p_at, Q, t.rows, t.cols, r);
    float* keep = q_.data() + t.q_at;
    std::copy(Q, Q + t.cols * r, keep);
    if (!std::all_of(keep, keep + t.cols * r, [](float v) { return std::isfinite(v); })) init_q(t);
    q += t.cols * r;
  }
}

}  // namespace parallama
