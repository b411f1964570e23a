#pragma once
// Synchronous data parallelism: gradients are summed over the data-parallel group in buckets
// (contiguous ranges of the flat gradient buffer, filled from its end, the order in which
// backward finishes them). A bucket's all-reduce starts as soon as backward reports that every
// gradient in it is final, so communication overlaps the rest of backward. Under ZeRO the
// bucket is reduce-scattered instead: this rank receives the sum of its piece only.
#include <cstdint>
#include <vector>

#include "comm/group.h"
#include "model/params.h"
#include "parallel/zero.h"

namespace parallama {

struct ReduceStats {
  double comm_s = 0;     // from the first bucket's launch to the last bucket's completion
  double exposed_s = 0;  // time spent waiting for communication after backward finished
  int buckets = 0;
};

class GradReducer {
 public:
  GradReducer(comm::Group group, ParamBuffer& grads, int64_t bucket_bytes);
  // ZeRO: each of plan's buckets reduce-scattered, this rank's summed piece of bucket i into
  // out[i] (out[i] = the bucket's start: in place), also with a group of one.
  GradReducer(comm::Group group, ParamBuffer& grads, const ZeroPlan& plan,
              const std::vector<float*>& out);
  // Call before the backward pass of the last micro-batch.
  void begin();
  // Backward reports that gradients at flat offsets >= offset are final.
  void ready_from(int64_t offset);
  // Launches what remains, waits for everything; returns this step's statistics.
  ReduceStats finish();
  size_t num_buckets() const { return buckets_.size(); }

 private:
  void poll();
  struct Bucket {
    int64_t begin, end;
    comm::Request req;
    bool launched = false, done = false;
    float* out = nullptr;  // ZeRO: where this rank's summed piece goes
    const std::vector<int64_t>* counts = nullptr;
  };
  comm::Group group_;
  ParamBuffer& grads_;
  bool scatter_ = false;
  std::vector<Bucket> buckets_;  // from the end of the buffer to its start
  size_t next_ = 0;
  double t_first_ = 0, t_last_done_ = 0;
};

}  // namespace parallama
