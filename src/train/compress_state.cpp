#include "train/compress_state.h"

#include <cmath>
#include <cstdio>

#include "io/checkpoint.h"
#include "io/param_io.h"
#include "io/safetensors.h"
#include "tensor/error.h"
#include "tensor/hash.h"
#include "tensor/tensor.h"

namespace parallama {

namespace fs = std::filesystem;

namespace {

constexpr const char* kResidualFile = "residual.safetensors";
constexpr const char* kQFile = "powersgd.safetensors";

// Which tensors PowerSGD compresses on this rank, at which rank: names and local shapes.
uint64_t q_fingerprint(const ParamLayout& layout, int rank) {
  uint64_t h = fnv1a64(std::to_string(rank));
  for (const ParamSpec& s : layout.specs())
    if (lowrank_compressed(s, rank)) h = fnv1a64(s.name + shape_str(s.shape), h);
  return h;
}

std::string q_name(int tp, int pp) {
  return "q." + std::to_string(tp) + "." + std::to_string(pp);
}

// Every rank of the replica learns every rank's Q (and its coordinates and fingerprint).
void save_q(PowerSgd& psgd, const ParamLayout& layout, const fs::path& tmp, Mesh& mesh,
            bool writer) {
  comm::Group& g = mesh.replica;
  const int R = g.size();
  const std::vector<float>& q = psgd.state();
  const int64_t mine[4] = {static_cast<int64_t>(q.size()), mesh.coord().tp, mesh.coord().pp,
                           static_cast<int64_t>(q_fingerprint(layout, psgd.rank()))};
  std::vector<int64_t> all(4 * static_cast<size_t>(R));
  g.all_gather(mine, all.data(), std::vector<int64_t>(R, 4), DType::I64);
  std::vector<int64_t> counts(R);
  int64_t total = 0;
  for (int r = 0; r < R; ++r) total += counts[r] = all[4 * r];
  std::vector<float> qs(static_cast<size_t>(total));
  g.all_gather(q.data(), qs.data(), counts);
  if (!writer) return;
  io::SafeTensorsWriter w;
  std::map<std::string, std::string> meta{{"rank", std::to_string(psgd.rank())}};
  int64_t at = 0;
  for (int r = 0; r < R; ++r) {
    const std::string name =
        q_name(static_cast<int>(all[4 * r + 1]), static_cast<int>(all[4 * r + 2]));
    meta[name] = hex16(static_cast<uint64_t>(all[4 * r + 3]));
    w.add(name, qs.data() + at, {counts[r]});
    at += counts[r];
  }
  w.set_metadata(meta);
  w.write((tmp / kQFile).string());
}

}  // namespace

std::vector<std::string> save_compress_state(GradReducer& red, const ParamLayout& layout,
                                             const fs::path& tmp, Mesh& mesh, bool writer) {
  if (red.residual().empty()) return {};
  io::save_residuals(layout, red.residual().data(), (tmp / kResidualFile).string(), mesh.tp,
                     mesh.pp, writer, mesh.dp);
  std::vector<std::string> files{kResidualFile};
  if (PowerSgd* psgd = red.powersgd()) {
    save_q(*psgd, layout, tmp, mesh, writer);
    files.push_back(kQFile);
  }
  if (!writer) return {};
  return files;
}

int saved_dp(const io::SafeTensorsReader& r, const std::string& path) {
  const auto it = r.metadata().find("dp");
  const int saved = it == r.metadata().end() ? 0 : std::atoi(it->second.c_str());
  if (saved < 1) throw Error(path + ": no \"dp\" in its metadata");
  return saved;
}

std::string load_residuals(std::vector<float>& residual, const ParamLayout& layout,
                           const std::string& path, const Mesh& mesh) {
  const io::SafeTensorsReader r(path);
  const int saved = saved_dp(r, path);
  const int D = mesh.dp.size(), d = mesh.coord().dp;
  ParamBuffer one(layout);
  std::fill(residual.begin(), residual.end(), 0.0f);
  auto add = [&](int k, float w) {
    io::read_params(r, one, "residual." + std::to_string(k) + ".");
    for (size_t i = 0; i < residual.size(); ++i) residual[i] += w * one.data()[i];
  };
  std::string line;
  if (saved == D) {
    add(d, 1.0f);
    line = "error feedback: each data-parallel rank's residual restored";
  } else {
    for (int k = 0; k < saved; ++k) add(k, 1.0f / static_cast<float>(D));
    line = "error feedback: the residuals of " + std::to_string(saved) +
           " data-parallel ranks summed and shared out equally over " + std::to_string(D);
  }
  for (const ParamSpec& s : layout.specs())
    if (s.tied_copy) std::fill_n(residual.begin() + s.offset, s.numel, 0.0f);
  return line;
}

namespace {

std::string load_q(PowerSgd& psgd, const ParamLayout& layout, const std::string& path,
                   const Mesh& mesh) {
  if (!fs::exists(path)) return "PowerSGD starts from a fresh Q (the checkpoint has none)";
  // (listed in trainer.json and verified, or absent)
  const io::SafeTensorsReader r(path);
  const std::string name = q_name(mesh.coord().tp, mesh.coord().pp);
  const auto& meta = r.metadata();
  const auto fp = meta.find(name);
  if (!r.has(name) || fp == meta.end() || fp->second != hex16(q_fingerprint(layout, psgd.rank())))
    return "PowerSGD starts from a fresh Q (the checkpoint's compressed other tensors or at "
           "another rank)";
  std::vector<float> q(psgd.state().size());
  r.read_f32(name, q.data(), {static_cast<int64_t>(q.size())});
  psgd.set_state(q);
  return "PowerSGD's Q restored";
}

}  // namespace

std::string load_compress_state(GradReducer& red, const ParamLayout& layout, const std::string& dir,
                                const Mesh& mesh) {
  if (red.residual().empty()) return "";
  // What trainer.json lists must be there, whole.
  const nlohmann::json j = read_trainer_json(dir);
  const auto listed = [&](const char* f) { return j["checksums"].contains(f); };
  if (!listed(kResidualFile))
    return "error feedback starts with empty residuals (the checkpoint has none)";
  verify_checkpoint_file(dir, j, kResidualFile);
  if (red.powersgd() && listed(kQFile)) verify_checkpoint_file(dir, j, kQFile);
  const std::string path = (fs::path(dir) / kResidualFile).string();
  std::string line = load_residuals(red.residual(), layout, path, mesh);
  if (PowerSgd* psgd = red.powersgd())
    line += "; " + load_q(*psgd, layout, (fs::path(dir) / kQFile).string(), mesh);
  return line;
}

}  // namespace parallama
