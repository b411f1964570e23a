#pragma once
// Parameter-shaped buffers (parameters, optimizer moments) to and from safetensors files. Files
// always hold whole tensors under their Hugging Face names, whatever the layout: the tensors of a
// tensor-parallel slice are gathered one at a time into whole tensors and streamed to the file by
// one rank, and each rank reads back only its own slice of each tensor. So a file written by any
// layout loads into any other, and no rank ever holds more than about one whole tensor beyond its
// own shard.
#include <exception>
#include <string>

#include "comm/group.h"
#include "io/safetensors.h"
#include "model/params.h"
#include "optim/optimizer.h"

namespace parallama::io {

// Collective over tp, the tensor-parallel group of params' shard (a size-1 Group() for a layout
// without tensor parallelism): writes every tensor of params, whole, to `path` atomically (see
// SafeTensorsStreamWriter). Exactly one rank passes writer = true and only that rank touches the
// file system. Throws Error on every rank when the group does not match the layout or writing
// fails (the writer's own message, naming the file).
void save_params(const ParamBuffer& params, const std::string& path, comm::Group& tp, bool writer);
// One process (a layout without tensor parallelism).
void save_params(const ParamBuffer& params, const std::string& path);

// This shard's part of every tensor of params (names after `prefix`, e.g. "exp_avg."), reading
// only those bytes of the file. Checks every shape against the whole model's, naming the file
// and the tensor on a mismatch; refuses lm_head.weight for a model whose head is tied.
void read_params(const SafeTensorsReader& r, ParamBuffer& params, const std::string& prefix = "");
void load_params(ParamBuffer& params, const std::string& path);

// Optimizer state the same way: each state under its name as prefix ("exp_avg.", "exp_avg_sq."
// or "momentum."), with the optimizer's name and step count as metadata. Loading refuses the
// state of another optimizer.
void save_optimizer(const Optimizer& optim, const std::string& path, comm::Group& tp, bool writer);
void load_optimizer(Optimizer& optim, const std::string& path);

// Adds params' tensors to a collecting writer (no copy: params must outlive w.write()). Whole
// tensors only: throws Error for a tensor-parallel slice.
void add_params(SafeTensorsWriter& w, const ParamBuffer& params, const std::string& prefix = "");

// Collective over group: keeps ranks in step when only some of them did a piece of work that can
// fail (file I/O on one writer, say). Returns when no rank has an error; otherwise every rank
// throws: those with an error rethrow their own, the others an Error with the message of the
// lowest failing rank.
void agree_on_failure(comm::Group& group, std::exception_ptr error);

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
