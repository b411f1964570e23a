#pragma once
// PowerSGD (Vogels, Karimireddy and Jaggi, 2019): a gradient matrix M (n × m) of each
// data-parallel rank travels as two thin factors. With Q (m × r) the last step's result (a warm
// start; a fixed pseudo-random matrix at first, the same on every rank):
//   1. P = M Q on each rank (n × r), summed over the group;
//   2. P̂ = P with orthonormal columns (Gram-Schmidt), the same bits on every rank;
//   3. Q = Mᵀ P̂ on each rank (m × r), summed over the group;
//   4. the summed gradient is approximated by P̂ Qᵀ, and each rank keeps what its own part lost,
//      M - P̂ (Mᵀ P̂)ᵀ, as its residual (error feedback: added to the next step's gradient).
// (n + m)·r values travel instead of n·m. Tensors with a dimension below 2r, norms and biases
// travel whole in fp32, in the first sum. A bucket of the gradient buffer (parallel/zero.h) is
// thus two all-reduces; the caller sums each message and calls the next stage in the same order
// on every rank. The reconstruction P̂ Qᵀ is a plain loop, so every replica computes the same bits
// whatever matrix library it links.
#include <cstdint>
#include <string>
#include <vector>

#include "model/params.h"
#include "parallel/zero.h"

namespace parallama {

// Whether PowerSGD of rank r compresses tensor s: a 2-D matrix (weights, embeddings) whose
// dimensions are both at least 2r.
bool lowrank_compressed(const ParamSpec& s, int rank);
// Floats the two sums of one step carry over all of a layout's tensors (P and Q of the
// compressed, the others whole).
int64_t lowrank_wire_floats(const ParamLayout& layout, int rank);
// Floats of the warm-start state (every compressed tensor's Q).
int64_t lowrank_state_floats(const ParamLayout& layout, int rank);

class PowerSgd {
 public:
  PowerSgd(const ParamLayout& layout, int rank, const std::vector<GradBucket>& buckets);
  int rank() const { return rank_; }
  // Stage 1 of bucket b: P = M Q of its compressed tensors, then its other tensors, packed into
  // the returned message (to be summed).
  std::vector<float>& first(size_t b, const float* grads);
  // Stage 2, with the first message summed: the whole tensors' sums back into grads, P̂ from P,
  // this rank's Q = Mᵀ P̂ packed into the returned message (to be summed), and the residual of the
  // compressed tensors (grads' values before, minus what P̂ Qᵀ keeps of them) into residual.
  std::vector<float>& second(size_t b, float* grads, float* residual);
  // Stage 3, with the second message summed: grads = P̂ Qᵀ for the compressed tensors; Q is kept
  // as the next step's warm start (a non-finite Q, from an overflowed step, starts afresh).
  void third(size_t b, float* grads);

  // Every compressed tensor's Q in layout order (for checkpoints); set_state checks the size.
  const std::vector<float>& state() const { return q_; }
  void set_state(const std::vector<float>& q);

 private:
  struct Tensor {
    int64_t offset, rows, cols;  // in the gradient buffer
    int64_t q_at;                // its Q in q_
    int64_t p_at;                // its P in its bucket's first message
  };
  struct Bucket {
    std::vector<Tensor> low;                         // compressed
    std::vector<std::pair<int64_t, int64_t>> whole;  // [begin, end) of the others
    int64_t p_floats = 0, whole_floats = 0, q_floats = 0;
    std::vector<float> first, second;  // the two messages
  };
  void init_q(const Tensor& t);

  int rank_;
  std::vector<Bucket> buckets_;
  std::vector<float> q_;
};

}  // namespace parallama
