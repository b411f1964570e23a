#include "io/checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data/tokenizer.h"
#include "tensor/error.h"

namespace fs = std::filesystem;

namespace parallama {

namespace {

constexpr int kFormat = 1;

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!(f << text) || !f.flush()) throw Error("cannot write " + path.string());
}

}  // namespace

std::string file_checksum(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path);
  uint64_t h = 0xcbf29ce484222325ull;
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
                     const CheckpointState& state) {
  const fs::path final_dir(dir);
  const fs::path parent = final_dir.has_parent_path() ? final_dir.parent_path() : fs::path(".");
  fs::create_directories(parent);
  const fs::path tmp =
      parent / ("." + final_dir.filename().string() + ".tmp-" + std::to_string(getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_params(params, (tmp / "model.safetensors").string());
  optim.save((tmp / "optimizer.safetensors").string());
  for (const auto& f : state.copy_files) fs::copy_file(f, tmp / fs::path(f).filename());
  nlohmann::json j = state.extra.is_object() ? state.extra : nlohmann::json::object();
  j["format"] = kFormat;
  j["step"] = state.step;
  j["data_position"] = state.data_position;
  j["checksums"] = {
      {"model.safetensors", file_checksum((tmp / "model.safetensors").string())},
      {"optimizer.safetensors", file_checksum((tmp / "optimizer.safetensors").string())}};
  write_text(tmp / "trainer.json",
             j.dump(1) + "\n");  // written last: its presence marks completeness
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

}  // namespace

void load_checkpoint_model(const std::string& dir, ParamBuffer& params) {
  verify(dir, read_trainer_json(dir), "model.safetensors");
  load_params(params, (fs::path(dir) / "model.safetensors").string());
}

CheckpointState load_checkpoint(const std::string& dir, ParamBuffer& params, Optimizer& optim) {
  const nlohmann::json j = read_trainer_json(dir);
  verify(dir, j, "model.safetensors");
  verify(dir, j, "optimizer.safetensors");
  load_params(params, (fs::path(dir) / "model.safetensors").string());
  optim.load((fs::path(dir) / "optimizer.safetensors").string());
  CheckpointState s;
  s.step = j["step"].get<int64_t>();
  s.data_position = j["data_position"].get<int64_t>();
  s.extra = j;
  return s;
}

}  // namespace parallama
