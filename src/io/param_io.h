#pragma once
// Parameter-shaped buffers (parameters, optimizer moments) to and from safetensors files. Files
// always hold whole tensors under their Hugging Face names, whatever the layout: within each
// pipeline stage the tensors of a tensor-parallel slice are gathered one at a time into whole
// tensors, each stage sends them one at a time to one writing rank, which streams them to the
// file; each rank reads back only its own tensors, and of those only its slice. So a file written
// by any layout loads into any other, and no rank ever holds more than about one whole tensor
// beyond its own shard.
#include <exception>
#include <string>
#include <vector>

#include "comm/group.h"
#include "io/safetensors.h"
#include "model/params.h"
#include "optim/optimizer.h"

namespace parallama::io {

// Collective over one model replica, given as two groups: tp, the tensor-parallel group of
// params' shard, and pp, its pipeline group (the ranks of the same tensor-parallel rank in every
// stage, ordered by stage); a size-1 Group() for a layout without either. Every rank of the
// replica calls it, and exactly one passes writer = true; only that rank touches the file system.
// Writes every tensor of the whole model, whole, to `path` atomically (see
// SafeTensorsStreamWriter): stage 0's tensors first, then stage 1's, and so on. A last stage's
// copy of a tied embedding (ParamSpec::tied_copy) is not stored: the first stage's table is.
// Throws Error on every rank of the replica when the number of writers is not one, a group does
// not match the layout, the stages do not hold every tensor of the model exactly once, or writing
// fails (the writer's own message, naming the file).
// With dp of more than one rank, every replica calls it together, as for save_optimizer.
void save_params(const ParamBuffer& params, const std::string& path, comm::Group& tp,
                 comm::Group& pp, bool writer, comm::Group dp = {});
// One process (the whole model).
void save_params(const ParamBuffer& params, const std::string& path);

// This shard's part of every tensor of params (names after `prefix`, e.g. "exp_avg."), reading
// only those bytes of the file; a tied copy of the embedding reads model.embed_tokens.weight like
// the first stage's. Checks every shape against the whole model's, naming the file and the
// tensor on a mismatch; refuses lm_head.weight for a model whose head is tied.
void read_params(const TensorSource& r, ParamBuffer& params, const std::string& prefix = "");
void load_params(ParamBuffer& params, const std::string& path);

// Optimizer state the same way: each state under its name as prefix ("exp_avg.", "exp_avg_sq."
// or "momentum."; all stages' tensors of one state before the next state's), with the
// optimizer's name and step count as metadata. Loading refuses the state of another optimizer.
// A ZeRO optimizer (owning pieces only) is saved by every replica together: dp is the
// data-parallel group, every rank of every replica calls save_optimizer (exactly one of them a
// writer), each tensor's pieces are all-gathered over dp one tensor at a time, and the replicas
// other than the writer's move their tensors like it but write nothing. Loading reads each
// tensor's slice and keeps the owned piece.
void save_optimizer(const Optimizer& optim, const std::string& path, comm::Group& tp,
                    comm::Group& pp, bool writer, comm::Group dp = {});
void load_optimizer(Optimizer& optim, const std::string& path);
void load_optimizer(Optimizer& optim, const TensorSource& r);

// Parameter-shaped buffers that differ between data-parallel ranks (error feedback's residuals,
// the workers' own state under --sync local and diloco): buffer k is data-parallel rank
// from_dp's `data` (each rank passes its own pointer), stored under its prefix, whole tensors as
// save_params stores them, with the number of data-parallel ranks as metadata "dp". Every rank
// of every replica calls it with the same list (dp: the data-parallel group); each tensor is
// broadcast from its rank over dp in turn.
struct RankBuffer {
  std::string prefix;
  const float* data;
  int from_dp;
};
void save_rank_buffers(const ParamLayout& layout, const std::vector<RankBuffer>& buffers,
                       const std::string& path, comm::Group& tp, comm::Group& pp, bool writer,
                       comm::Group& dp);
// Error feedback's residuals: rank d's under "residual.<d>.".
void save_residuals(const ParamLayout& layout, const float* residual, const std::string& path,
                    comm::Group& tp, comm::Group& pp, bool writer, comm::Group& dp);

// The most bytes of gather buffers this rank held at once while saving (whole tensors gathered
// over tensor-parallel or data-parallel ranks, or received from another stage) since the last
// call; resets the count.
int64_t take_gather_peak_bytes();

// Adds params' tensors to a collecting writer (no copy: params must outlive w.write()). The whole
// model only: throws Error for a tensor-parallel slice or a pipeline stage.
void add_params(SafeTensorsWriter& w, const ParamBuffer& params, const std::string& prefix = "");

// Collective over tp and pp (one replica, as for save_params; and the replicas over dp when
// given): the coordinates of the one rank that passes writer = true. Throws Error on every rank,
// `what` first, unless exactly one does.
struct WriterAt {
  int tp = 0, pp = 0;  // its rank in the tensor-parallel group and in the pipeline group
  int64_t pid = 0;     // its process id
};
WriterAt replica_writer(comm::Group& tp, comm::Group& pp, bool writer, const std::string& what,
                        comm::Group dp = {});

// Collective over group: keeps ranks in step when only some of them did a piece of work that can
// fail (file I/O on one writer, say). Returns when no rank has an error; otherwise every rank
// throws: those with an error rethrow their own, the others an Error with the message of the
// lowest failing rank.
void agree_on_failure(comm::Group& group, std::exception_ptr error);
// The same over a whole replica, tp first and then pp (no group spanning the replica needed):
// every rank of the replica throws if any rank of it has an error.
void agree_on_failure(comm::Group& tp, comm::Group& pp, std::exception_ptr error);
// ... and then over the replicas (dp): every rank of every replica throws.
void agree_on_failure(comm::Group& tp, comm::Group& pp, comm::Group& dp, std::exception_ptr error);

// Runs f unless `error` already holds an exception, and keeps f's exception in `error` instead of
// throwing it: a rank goes on with the group's collectives and reports at agree_on_failure.
template <class F>
void guarded(std::exception_ptr& error, F&& f) {
  if (error) return;
  try {
    f();
  } catch (...) {
    error = std::current_exception();
  }
}

}  // namespace parallama::io
