#pragma once
// Tensor parallelism (Megatron) as the named pairs a layer calls. A column-parallel projection
// splits its weight by output rows: its input enters through `copy` (forward: the same input on
// every rank; backward: the input gradient summed over the group, overlapped with the weight
// gradient: column_backward). A row-parallel projection splits by input columns: its output
// leaves through `reduce` (forward: the partial products summed over the group; backward: the
// same gradient on every rank, no communication). The embedding, the head and the cross-entropy
// are vocabulary-parallel: each rank holds V/tp rows of the tables and V/tp columns of the
// logits (vocab_loss, gather_vocab). With a size-1 group every collective is a no-op.
// Sequence parallelism's pair (all-gather before a column-parallel layer, reduce-scatter after a
// row-parallel one) belongs here beside them.
#include <cstdint>
#include <functional>

#include "comm/group.h"
#include "model/operands.h"

namespace parallama {

// Time in the tensor-parallel collectives since the last reset: comm_s from each launch to its
// observed completion, exposed_s spent waiting for them (not hidden behind computation).
struct TpCommStats {
  double comm_s = 0, exposed_s = 0;
  int64_t all_reduces = 0;
};

class TensorParallel {
 public:
  explicit TensorParallel(comm::Group group) : group_(std::move(group)) {}
  int size() const { return group_.size(); }
  int rank() const { return group_.rank(); }
  // Whether this rank adds the residual to a row-parallel sum (once over the group).
  bool adds_residual() const { return group_.rank() == 0; }

  // The forward of `reduce` (and of the vocabulary-parallel embedding): x (n floats) summed (or
  // maxed) over the group, blocking, timed.
  void reduce(float* x, int64_t n, comm::ReduceOp op = comm::ReduceOp::Sum);
  // The backward of `copy` for a column-parallel product over N rows: dx (N, I) = alpha · dy
  // (N, O) · w (O, I) summed over the group while dw (O, I) += alpha · dy (N, O)ᵀ · x (N, I) is
  // computed. dw_done: called once the weight gradient is complete (before dx without tensor
  // parallelism, so the caller can send it while dx computes).
  void column_backward(const Operands& ops, int64_t N, float* dx, float* dw, Operand dy, Operand x,
                       Operand w, int64_t I, int64_t O, float alpha = 1.0f,
                       const std::function<void()>& dw_done = {});

  // The vocabulary-parallel cross-entropy of N rows of this rank's logits (N, V) (columns from
  // v0): row maxima and the sums of exponentials and of target logits over the group. Writes
  // each row's loss and its (max, log-sum) stats for the backward; needs `max` (N) and `part`
  // (2N) of scratch.
  void vocab_loss(float* losses, float* stats, float* max, float* part, const float* logits,
                  const int32_t* targets, int64_t N, int64_t V, int64_t v0);
  // Every rank's (S, V_r) block of logits gathered, as (S, vocab) rows in vocabulary order, into
  // `out`; `gathered` holds S · vocab floats of scratch.
  void gather_vocab(const float* local, int64_t S, int64_t vocab, float* gathered, float* out);

  const TpCommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 private:
  comm::Group group_;
  TpCommStats stats_;
};

}  // namespace parallama
