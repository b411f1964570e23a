// libFuzzer harness: a Hugging Face directory's JSON files. The input is config.json's text, then
// (after a line "#index") model.safetensors.index.json's. config.json either is refused with
// parallama::Error or gives a model whose config.json, as convert --to hf: writes it, reads back
// to the same model. The index goes into a scratch directory beside one small shard and is read
// as convert reads a directory (io::HfWeights): refused with Error, or every tensor it names is
// found in the shard.
#include <cstdint>
#include <fstream>
#include <string>

#include "fuzz_util.h"
#include "io/hf.h"
#include "io/json_depth.h"
#include "io/safetensors.h"
#include "tensor/error.h"

namespace {

using parallama::fuzz::fail;
namespace io = parallama::io;

void check_config(const std::string& text) {
  nlohmann::json j;
  try {
    j = parallama::parse_json_bounded(text, 16);
  } catch (const std::exception&) {
    return;  // not JSON: convert says so before this reader runs
  }
  io::HfConfig c;
  try {
    c = io::parse_hf_config(j, "config.json");
  } catch (const parallama::Error&) {
    return;
  }
  const std::string dtype = c.torch_dtype.empty() ? "float32" : c.torch_dtype;
  const std::string written = io::hf_config_json(c.model, dtype, 1, 2).dump(2);
  io::HfConfig back;
  try {
    back = io::parse_hf_config(nlohmann::json::parse(written), "config.json");
  } catch (const parallama::Error& e) {
    fail(std::string("a config.json written for an accepted model is refused: ") + e.what() +
         "\n" + written);
  }
  if (io::hf_config_json(back.model, dtype, 1, 2).dump(2) != written)
    fail("config.json does not read back the same model:\n" + written);
}

void check_index(const std::string& text) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(parallama::fuzz::scratch_dir()) / "hf";
  static const bool made = [&] {
    fs::create_directories(dir);
    io::SafeTensorsWriter w;
    const float x[4] = {1, 2, 3, 4};
    w.add("model.norm.weight", x, parallama::Shape{4});
    w.add("lm_head.weight", x, parallama::Shape{2, 2});
    w.write((dir / "model-00001-of-00001.safetensors").string());
    return true;
  }();
  (void)made;
  std::ofstream(dir / "model.safetensors.index.json", std::ios::binary | std::ios::trunc) << text;
  try {
    const io::HfWeights w(dir.string());
    for (const std::string& name : w.names())
      if (!w.file_of(name).has(name)) fail("the index names " + name + ", which its file lacks");
  } catch (const parallama::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::string marker = "\n#index\n";
  const size_t at = input.find(marker);
  check_config(input.substr(0, at));
  if (at != std::string::npos) check_index(input.substr(at + marker.size()));
  return 0;
}
