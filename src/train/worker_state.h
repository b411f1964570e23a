#pragma once
// The workers' own state in checkpoints under --sync local and diloco. Between two meetings every
// data-parallel worker steps on its own gradients: its parameters and its optimizer's moments
// differ from the others', and DiLoCo adds the outer parameters, the outer momentum and (with
// diloco.compress) the outer gradient's residual. model.safetensors and optimizer.safetensors
// hold worker 0's; workers.safetensors holds the rest, whole tensors (any tp and pp read them):
//   param.<d>.         worker d's parameters
//   <state>.<d>.       worker d's optimizer state (exp_avg, exp_avg_sq or momentum)
//   outer.             DiLoCo's outer parameters (the same on every worker)
//   outer_momentum.    DiLoCo's outer momentum (the same on every worker)
//   residual.<d>.      worker d's residual of the compressed outer gradient
// with the number of workers as metadata "dp". Resuming with as many workers, each takes its own
// and the run continues bit for bit as if it had not stopped, even between two meetings; with
// another number, every worker starts from worker 0's parameters and moments, DiLoCo's outer
// state is taken whole and the residuals' sum is shared out equally, and the log says so.
#include <filesystem>
#include <string>
#include <vector>

#include "parallel/mesh.h"
#include "parallel/sync.h"

namespace parallama {

// Writes workers.safetensors into tmp (collective over every rank of every replica; only the
// writer touches the file system); returns its name on the writer.
std::vector<std::string> save_worker_state(const WorkerState& ws, const Replica& st,
                                           const std::filesystem::path& tmp, Mesh& mesh,
                                           bool writer);

// Loads what checkpoint dir holds into ws and st (every rank, no communication); returns the log's
// line. A checkpoint without the file (from another strategy) leaves everything as loaded from
// model.safetensors and optimizer.safetensors, DiLoCo's outer parameters equal to them.
std::string load_worker_state(WorkerState& ws, Replica& st, const std::string& dir,
                              const Mesh& mesh);

}  // namespace parallama
