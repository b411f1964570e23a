#pragma once
// Synchronous data parallelism: gradients are summed over the data-parallel group in buckets
// (contiguous ranges of the flat gradient buffer, filled from its end, the order in which
// backward finishes them). A bucket's all-reduce starts as soon as backward reports that every
// gradient in it is final, so communication overlaps the rest of backward.
#include <cstdint>
#include <vector>

#include "comm/group.h"
#include "model/params.h"

namespace parallama {

struct ReduceStats {
  double comm_s = 0;     // from the first bucket's launch to the last bucket's completion
  double exposed_s = 0;  // time spent waiting for communication after backward finished
  int buckets = 0;
};

class GradReducer {
 public:
  GradReducer(comm::Group group, ParamBuffer& grads, int64_t bucket_bytes);
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
  };
  comm::Group group_;
  ParamBuffer& grads_;
  std::vector<Bucket> buckets_;  // from the end of the buffer to its start
  size_t next_ = 0;
  double t_first_ = 0, t_last_done_ = 0;
};

}  // namespace parallama
