#pragma once
// Compression's state in checkpoints (parallel.compress int8 or powersgd; see
// parallel/data_parallel.h):
//   residual.safetensors  every data-parallel rank's error-feedback residual, rank d's under
//                         "residual.<d>.", whole tensors (any layout reads them), metadata "dp";
//   powersgd.safetensors  PowerSGD's warm start Q of each rank of a replica (the replicas hold the
//                         same), tensor "q.<tp>.<pp>" flat, with the rank and a fingerprint of the
//                         compressed tensors' names and shapes as metadata.
// Resuming with the same number of data-parallel ranks, each rank takes its own residual, so the
// run continues bit for bit as if it had not stopped; with another number, the residuals' sum is
// shared out equally (nothing the compression owes is lost), and the log says so. Q is taken where
// the same tensors are compressed at the same rank; otherwise PowerSGD starts afresh, as the log
// says.
#include <filesystem>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "parallel/data_parallel.h"
#include "parallel/mesh.h"

namespace parallama {

// Writes the files into tmp (collective over every rank of every replica; only the writer touches
// the file system); returns their names. Nothing without error feedback.
std::vector<std::string> save_compress_state(GradReducer& red, const ParamLayout& layout,
                                             const std::filesystem::path& tmp, Mesh& mesh,
                                             bool writer);

// Loads what checkpoint dir holds into red (every rank, no communication); returns the log's line
// (empty when the run keeps no such state).
std::string load_compress_state(GradReducer& red, const ParamLayout& layout, const std::string& dir,
                                const Mesh& mesh);

// This rank's residual from the file at path (residuals saved by io::save_residuals): its own with
// as many data-parallel ranks as were saved, else the saved ranks' sum shared out equally; a tied
// copy of the embedding (a last stage's) is not stored and starts at zero. Returns the log's line.
std::string load_residuals(std::vector<float>& residual, const ParamLayout& layout,
                           const std::string& path, const Mesh& mesh);

// The number of data-parallel ranks a file of io::save_rank_buffers was saved by.
int saved_dp(const io::SafeTensorsReader& r, const std::string& path);

}  // namespace parallama
