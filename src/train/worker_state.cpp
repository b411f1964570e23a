#include "train/worker_state.h"

#include <algorithm>

#include "io/checkpoint.h"
#include "io/param_io.h"
#include "io/safetensors.h"
#include "train/compress_state.h"

namespace parallama {

namespace fs = std::filesystem;

namespace {

constexpr const char* kWorkersFile = "workers.safetensors";

std::string per_worker(const std::string& name, int d) {
  return name + "." + std::to_string(d) + ".";
}

// Tensors under prefix into a parameter-shaped buffer of this rank's shard.
void read_into(const io::SafeTensorsReader& r, const ParamLayout& layout, const std::string& prefix,
               float* to) {
  ParamBuffer one(layout);
  io::read_params(r, one, prefix);
  std::copy(one.data(), one.data() + one.size(), to);
}

// Whether the file holds any tensor under prefix.
bool holds(const io::SafeTensorsReader& r, const std::string& prefix) {
  return std::any_of(r.tensors().begin(), r.tensors().end(),
                     [&](const auto& t) { return t.name.starts_with(prefix); });
}

}  // namespace

std::vector<std::string> save_worker_state(const WorkerState& ws, const Replica& st,
                                           const fs::path& tmp, Mesh& mesh, bool writer) {
  std::vector<io::RankBuffer> buffers;
  const int D = mesh.dp.size();
  for (int d = 0; d < D; ++d) {
    buffers.push_back({per_worker("param", d), st.params.data(), d});
    for (int i = 0; i < st.optim.num_states(); ++i)
      buffers.push_back({per_worker(st.optim.state_name(i), d), st.optim.state(i), d});
    if (!ws.residual.empty()) buffers.push_back({per_worker("residual", d), ws.residual.data(), d});
  }
  if (!ws.outer.empty()) {
    buffers.push_back({"outer.", ws.outer.data(), 0});
    buffers.push_back({"outer_momentum.", ws.momentum.data(), 0});
  }
  io::save_rank_buffers(st.params.layout(), buffers, (tmp / kWorkersFile).string(), mesh.tp,
                        mesh.pp, writer, mesh.dp);
  if (!writer) return {};
  return {kWorkersFile};
}

std::string load_worker_state(WorkerState& ws, Replica& st, const std::string& dir,
                              const Mesh& mesh) {
  const nlohmann::json j = read_trainer_json(dir);
  if (!j["checksums"].contains(kWorkersFile))
    return "workers start from worker 0's parameters and optimizer state (the checkpoint holds "
           "no other worker's)";
  verify_checkpoint_file(dir, j, kWorkersFile);
  const std::string path = (fs::path(dir) / kWorkersFile).string();
  const io::SafeTensorsReader r(path);
  const ParamLayout& layout = st.params.layout();
  const int saved = saved_dp(r, path), D = mesh.dp.size(), d = mesh.coord().dp;
  std::string line;
  if (saved == D) {
    read_into(r, layout, per_worker("param", d), st.params.data());
    for (int i = 0; i < st.optim.num_states(); ++i)
      read_into(r, layout, per_worker(st.optim.state_name(i), d), st.optim.state(i));
    line = "each worker's own parameters and optimizer state restored";
  } else {
    line = "the checkpoint's " + std::to_string(saved) + " workers' parameters and optimizer " +
           "state are worker 0's for all " + std::to_string(D);
  }
  if (!ws.outer.empty()) {
    if (!holds(r, "outer."))
      return line + "; DiLoCo's outer state starts afresh (the checkpoint has none)";
    read_into(r, layout, "outer.", ws.outer.data());
    read_into(r, layout, "outer_momentum.", ws.momentum.data());
    line += "; DiLoCo's outer parameters and momentum restored";
  }
  if (!ws.residual.empty()) {
    if (!holds(r, per_worker("residual", 0)))
      return line + "; the outer gradient's residual starts empty (the checkpoint has none)";
    line += "; outer gradient " + load_residuals(ws.residual, layout, path, mesh);
  }
  return line;
}

}  // namespace parallama
