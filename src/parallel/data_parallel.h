#pragma once
// Synchronous data parallelism: gradients are summed over the data-parallel group in buckets
// (contiguous ranges of the flat gradient buffer, filled from its end, the order in which
// backward finishes them). A bucket's all-reduce starts as soon as backward reports that every
// gradient in it is final, so communication overlaps the rest of backward. Under ZeRO the
// bucket is reduce-scattered instead: this rank receives the sum of its piece only.
//
// Compressed (parallel.compress = "bf16" or "int8", from step compress_after + 1): each bucket
// is summed by comm's iall_reduce_wire (under ZeRO ireduce_scatter_wire, with the plan's
// division) with bf16 (half the bytes of fp32) or blockwise int8 (a quarter and a little more)
// on the wire: every rank's own chunk is summed in fp32, the others' arrive encoded, and (not
// under ZeRO) the sums go back to every rank encoded once, so the replicas stay bitwise equal.
// int8 keeps error feedback: what the encoding dropped of this rank's part (comm reports it) is
// kept in a residual buffer the size of the gradients and added to the bucket before its next
// reduction, so nothing is lost, only delayed. A group of one sends nothing and rounds nothing.
//
// PowerSGD (parallel.compress = "powersgd", see parallel/powersgd.h): each bucket is two fp32
// all-reduces of thin factors, with error feedback as for int8. To keep every rank's collectives
// in one order, a bucket's second all-reduce starts when the next bucket is launched (after its
// first one completes, which the time backward spends on the next bucket usually covers) or in
// finish(). Under ZeRO every rank rebuilds the whole bucket and keeps its piece.
//
// The embedding's rows (sparse_embedding, fp32, not under ZeRO, untied): a batch touches few of
// the V rows of the embedding table, the rest of its gradient is exactly zero on every rank, and
// backward finishes it last, so its all-reduce would come after backward, exposed. It gets a
// bucket of its own that travels as rows: the ranks OR together bit masks of their non-zero
// rows, each packs the rows of the union in row order, the packed rows are all-reduced, and
// unpacked in place. Every element of the result is the sum of the same values as the dense
// all-reduce's (a row outside the union is 0 everywhere); only the bytes differ.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/group.h"
#include "model/params.h"
#include "parallel/config.h"
#include "parallel/powersgd.h"
#include "parallel/zero.h"

namespace parallama {

struct ReduceStats {
  double comm_s = 0;     // from the first bucket's launch to the last bucket's completion
  double exposed_s = 0;  // time spent waiting for communication after backward finished
  int buckets = 0;
};

class GradReducer {
 public:
  // sparse_embedding: the (untied) embedding table's gradient travels as its non-zero rows
  // alone (fp32 only; see below).
  GradReducer(comm::Group group, ParamBuffer& grads, int64_t bucket_bytes,
              Compress compress = Compress::none, bool sparse_embedding = false,
              int64_t compress_after = 0, int powersgd_rank = 4);
  // ZeRO: each of plan's buckets reduce-scattered, this rank's summed piece of bucket i into
  // out[i] (out[i] = the bucket's start: in place), also with a group of one.
  GradReducer(comm::Group group, ParamBuffer& grads, const ZeroPlan& plan,
              const std::vector<float*>& out, Compress compress = Compress::none,
              int64_t compress_after = 0, int powersgd_rank = 4);
  // Call before the backward pass of the last micro-batch of step `step` (from 1), whose
  // gradients are 1 / unscale times the true ones (loss scaling).
  void begin(int64_t step = 1, float unscale = 1.0f);
  // Error feedback (int8, powersgd): what compression dropped and the next step adds back (empty
  // without), in the true gradients' units: added times this step's loss scale, so a scale that
  // changes (fp16) neither loses nor inflates it.
  std::vector<float>& residual() { return residual_; }
  // PowerSGD's warm start (null without).
  PowerSgd* powersgd() { return lowrank_.get(); }
  // Backward reports that gradients at flat offsets >= offset are final.
  void ready_from(int64_t offset);
  // Launches what remains, waits for everything; returns this step's statistics.
  ReduceStats finish();
  size_t num_buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    int64_t begin, end;
    comm::Request req;
    bool launched = false, done = false;
    int stage = 0;                // PowerSGD: which of its all-reduces is in flight (1 or 2)
    float* out = nullptr;         // ZeRO: where this rank's summed piece goes
    std::vector<int64_t> counts;  // ZeRO: elements of each rank
    // Embedding rows: row width (0: a dense bucket), the union's rows, them packed.
    int64_t row_width = 0;
    std::vector<int64_t> rows;
    std::vector<float> packed;
  };
  void launch_rows(size_t i);
  void unpack_rows(Bucket& b);
  void complete(Bucket& b);
  void poll();
  void launch(size_t i);
  void set_compression(Compress compress, int powersgd_rank);
  void advance(size_t i);  // PowerSGD: bucket i's all-reduce completed
  bool lowrank_now() const { return lowrank_ && now_lowrank_; }

  comm::Group group_;
  ParamBuffer& grads_;
  bool scatter_ = false;
  DType wire_ = DType::F32;  // compressed: BF16 or I8 (a group of more than one), else F32
  DType now_ = DType::F32;   // this step's: wire_ after compress_after steps, else F32
  int64_t compress_after_ = 0;
  std::unique_ptr<PowerSgd> lowrank_;  // powersgd (a group of more than one)
  bool now_lowrank_ = false;           // this step's: after compress_after steps
  std::vector<float> residual_;        // int8: what compression dropped, per gradient element
  float unscale_ = 1.0f;         // this step's: the gradients are 1 / unscale_ times the true ones
  std::vector<Bucket> buckets_;  // from the end of the buffer to its start
  size_t next_ = 0;
  double t_first_ = 0, t_last_done_ = 0;
};

}  // namespace parallama
