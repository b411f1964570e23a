// libFuzzer harness: a classifier's classifier.json (finetune/classifier.h), written into a
// scratch classifier directory beside a fixed tokenizer and weights file, and read as classify
// reads it. The input is read as it is, and, when it is a JSON object, again with the recorded
// hashes of those two files put in and sealed with its own checksum (as save_classifier does),
// so that the checks past the seal are fuzzed too. It is refused with parallama::Error, or its
// labels are at least two and distinct, its seq_len fits the model, and its config round-trips.
#include <cstdint>
#include <fstream>
#include <string>

#include "config_round_trip.h"
#include "finetune/classifier.h"
#include "finetune/verses.h"
#include "io/checkpoint.h"
#include "io/json_depth.h"
#include "tensor/error.h"

namespace {

using parallama::fuzz::fail;
namespace fs = std::filesystem;

const fs::path& classifier_dir() {
  static const fs::path dir = [] {
    const fs::path d = fs::path(parallama::fuzz::scratch_dir()) / "classifier";
    fs::create_directories(d);
    std::ofstream(d / "tokenizer.model", std::ios::binary) << "a tokenizer";
    std::ofstream(d / "model.safetensors", std::ios::binary) << "the weights";
    return d;
  }();
  return dir;
}

void check(const std::string& text) {
  std::ofstream(classifier_dir() / "classifier.json", std::ios::binary | std::ios::trunc) << text;
  parallama::finetune::ClassifierMeta m;
  try {
    m = parallama::finetune::read_classifier_meta(classifier_dir().string());
  } catch (const parallama::Error&) {
    return;
  }
  if (m.labels.size() < 2) fail("a classifier with fewer than two labels was accepted");
  try {
    parallama::finetune::check_distinct_labels(m.labels, "classifier.json");
  } catch (const parallama::Error&) {
    fail("a classifier with a repeated label was accepted");
  }
  if (m.seq_len < 1 || m.seq_len > m.cfg.model.max_seq_len) fail("seq_len outside the model");
  parallama::fuzz::check_config_round_trip(m.cfg, parallama::ConfigUse::none);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  check(text);
  nlohmann::json j;
  try {
    j = parallama::parse_json_bounded(text, 16);
  } catch (const std::exception&) {
    return 0;
  }
  if (!j.is_object()) return 0;
  const fs::path& d = classifier_dir();
  j["tokenizer_hash"] = parallama::file_hash((d / "tokenizer.model").string());
  if (!j.contains("checksums") || !j["checksums"].is_object())
    j["checksums"] = nlohmann::json::object();
  j["checksums"]["model.safetensors"] = parallama::file_checksum((d / "model.safetensors").string());
  parallama::seal_json(j);
  check(j.dump(1));
  return 0;
}
