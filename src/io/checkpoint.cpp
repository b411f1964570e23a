#include "io/checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>

#include "io/param_io.h"
#include "tensor/error.h"
#include "tensor/hash.h"

namespace fs = std::filesystem;

namespace parallama {

namespace {

constexpr int kFormat = 1;
constexpr const char* kTensorFiles[] = {"model.safetensors", "optimizer.safetensors"};

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!(f << text) || !f.flush()) throw Error("cannot write " + path.string());
}

}  // namespace

std::string file_checksum(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path);
  uint64_t h = kFnv1a64Basis;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h = fnv1a64(buf.data(), static_cast<size_t>(f.gcount()), h);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

void save_checkpoint(const std::string& dir, const ParamBuffer& params, const Optimizer& optim,
                     const CheckpointState& state, comm::Group& tp, comm::Group& pp, bool writer,
                     comm::Group dp) {
  io::replica_writer(tp, pp, writer, "saving " + dir, dp);  // throws unless exactly one writes
  const fs::path final_dir(dir);
  const fs::path parent = final_dir.has_parent_path() ? final_dir.parent_path() : fs::path(".");
  const fs::path tmp =
      parent / ("." + final_dir.filename().string() + ".tmp-" + std::to_string(getpid()));
  std::exception_ptr error;
  if (writer)
    io::guarded(error, [&] {
      fs::create_directories(parent);
      fs::remove_all(tmp);
      fs::create_directories(tmp);
    });
  io::agree_on_failure(tp, pp, dp, error);
  try {
    io::save_params(params, (tmp / "model.safetensors").string(), tp, pp, writer, dp);
    io::save_optimizer(optim, (tmp / "optimizer.safetensors").string(), tp, pp, writer, dp);
  } catch (...) {
    std::error_code ignored;
    if (writer) fs::remove_all(tmp, ignored);
    throw;
  }
  if (writer)
    io::guarded(error, [&] {
      for (const auto& f : state.copy_files) fs::copy_file(f, tmp / fs::path(f).filename());
      nlohmann::json j = state.extra.is_object() ? state.extra : nlohmann::json::object();
      j["format"] = kFormat;
      j["step"] = state.step;
      j["data_position"] = state.data_position;
      for (const char* name : kTensorFiles)
        j["checksums"][name] = file_checksum((tmp / name).string());
      write_text(tmp / "trainer.json", j.dump(1) + "\n");  // written last: marks completeness
      ::sync();
      if (fs::exists(final_dir)) {  // replace an older checkpoint of the same name
        const fs::path old =
            parent / ("." + final_dir.filename().string() + ".old-" + std::to_string(getpid()));
        fs::remove_all(old);
        fs::rename(final_dir, old);
        fs::rename(tmp, final_dir);
        fs::remove_all(old);
      } else {
        fs::rename(tmp, final_dir);
      }
    });
  if (writer && error) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
  }
  io::agree_on_failure(tp, pp, dp, error);
}

nlohmann::json read_trainer_json(const std::string& dir) {
  const fs::path p = fs::path(dir) / "trainer.json";
  if (!fs::is_directory(dir)) throw Error("checkpoint '" + dir + "' is not a directory");
  std::ifstream f(p);
  if (!f) throw Error(p.string() + ": missing; '" + dir + "' is not a complete checkpoint");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw Error(p.string() + ": corrupt (" + std::string(e.what()) + ")");
  }
  if (!j.is_object() || !j.contains("format") || !j.contains("step") || !j.contains("checksums") ||
      !j.contains("data_position"))
    throw Error(p.string() + ": corrupt (missing format, step, data_position or checksums)");
  if (j["format"] != kFormat)
    throw Error(p.string() + ": checkpoint format " + j["format"].dump() + " is not supported");
  return j;
}

namespace {

void verify(const std::string& dir, const nlohmann::json& j, const char* name) {
  const std::string path = (fs::path(dir) / name).string();
  if (!fs::exists(path)) throw Error(path + ": missing from the checkpoint");
  const auto want = j["checksums"].value(name, std::string());
  const std::string got = file_checksum(path);
  if (got != want)
    throw Error(path + ": checksum " + got + " does not match trainer.json (" + want +
                "); the file is corrupt or truncated");
}

// Reads trainer.json, verifies the first `files` tensor files (file i on the replica's rank
// i % (tp.size() · pp.size()), counting tensor-parallel ranks fastest), then runs read on every
// rank; throws on every rank of the replica if any of that failed anywhere.
template <class F>
nlohmann::json load(const std::string& dir, int files, comm::Group& tp, comm::Group& pp, F&& read) {
  std::exception_ptr error;
  nlohmann::json j;
  io::guarded(error, [&] { j = read_trainer_json(dir); });
  const int me = pp.rank() * tp.size() + tp.rank(), ranks = pp.size() * tp.size();
  for (int i = 0; i < files; ++i)
    if (i % ranks == me) io::guarded(error, [&] { verify(dir, j, kTensorFiles[i]); });
  io::agree_on_failure(tp, pp, error);  // no rank reads tensors of a file that failed its checksum
  io::guarded(error, [&] { read(fs::path(dir)); });
  io::agree_on_failure(tp, pp, error);
  return j;
}

}  // namespace

void load_checkpoint_model(const std::string& dir, ParamBuffer& params, comm::Group& tp,
                           comm::Group& pp) {
  load(dir, 1, tp, pp,
       [&](const fs::path& d) { io::load_params(params, (d / "model.safetensors").string()); });
}

CheckpointState load_checkpoint(const std::string& dir, ParamBuffer& params, Optimizer& optim,
                                comm::Group& tp, comm::Group& pp) {
  const nlohmann::json j = load(dir, 2, tp, pp, [&](const fs::path& d) {
    io::load_params(params, (d / "model.safetensors").string());
    io::load_optimizer(optim, (d / "optimizer.safetensors").string());
  });
  CheckpointState s;
  s.step = j["step"].get<int64_t>();
  s.data_position = j["data_position"].get<int64_t>();
  s.extra = j;
  return s;
}

}  // namespace parallama
