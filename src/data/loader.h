#pragma once
// The data loader: sample i is the window of T+1 tokens starting at i·T (inputs are its first T
// tokens, targets its last T). Each epoch visits every sample once in a seeded permutation. The
// position is a global sample index, the same whatever the number of data-parallel ranks: a
// global batch of G samples covers positions [p, p+G), and rank r of R takes micro-batch k as the
// B samples at p + (k·R + r)·B. A checkpoint stores p, so a run can resume on another layout.
#include <cstdint>
#include <vector>

namespace parallama {

// order = 0 .. n-1 shuffled by Fisher-Yates from a generator seeded with rng_seed: the same order
// on every platform and standard library.
void seeded_permutation(std::vector<int64_t>& order, int64_t n, uint64_t rng_seed);

class DataLoader {
 public:
  // tokens must outlive the loader. Throws Error when there is not one sample of T+1 tokens.
  DataLoader(const std::vector<int32_t>& tokens, int64_t T, uint64_t seed, int rank, int world);

  int64_t num_samples() const { return num_samples_; }
  int64_t position() const { return position_; }
  int64_t epoch() const { return position_ / num_samples_; }
  void set_position(int64_t p);  // throws Error for a negative position

  // Fills micro-batch k (B samples) of this rank in the current global batch:
  // tokens, targets (B, T).
  void micro_batch(int k, int64_t B, int32_t* tokens, int32_t* targets);
  // Fills micro-batch m of the global batch, whichever rank takes it: the B samples at p + m·B
  // (micro_batch(k) is m = k·world + rank). Dynamic balancing hands ranks other sets of m.
  void global_micro_batch(int64_t m, int64_t B, int32_t* tokens, int32_t* targets);
  // Moves to the next global batch of `global` = B · micro-batches · world samples.
  void advance(int64_t global) { position_ += global; }

  // The sample (index into the stream of windows) at a global position.
  int64_t sample_at(int64_t global_index);

 private:
  const std::vector<int32_t>& tokens_;
  int64_t T_, num_samples_;
  uint64_t seed_;
  int rank_, world_;
  int64_t position_ = 0;
  struct Perm {
    int64_t epoch = -1;
    std::vector<int64_t> order;
  } cache_[2];  // a global batch spans at most two epochs
};

}  // namespace parallama
