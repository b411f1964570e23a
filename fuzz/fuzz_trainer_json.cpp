// libFuzzer harness: the checkpoint's trainer.json reader (parse_trainer_json) on arbitrary text.
// It either refuses with parallama::Error or returns an object that reads back equal from its own
// text (dump(1), as save_checkpoint writes it). Since a mutated file rarely keeps a matching
// checksum, every input that is a JSON object is also sealed with its own checksum
// (seal_json, as save_checkpoint does) and read again, so that the checks past the
// checksum are fuzzed too. The config an accepted file records is read as `train --resume`
// reads it (checkpoint_config) and, when accepted, must round-trip (see config_round_trip.h).
#include <cstdint>
#include <exception>
#include <string>

#include "config_round_trip.h"
#include "io/checkpoint.h"
#include "io/json_depth.h"
#include "tensor/error.h"
#include "train/run_config.h"

namespace {

using parallama::fuzz::fail;

void check(const std::string& text) {
  nlohmann::json j;
  try {
    j = parallama::parse_trainer_json(text, "trainer.json");
  } catch (const parallama::Error&) {
    return;
  }
  const std::string again = j.dump(1);
  nlohmann::json k;
  try {
    k = parallama::parse_trainer_json(again, "trainer.json");
  } catch (const parallama::Error& e) {
    fail(std::string("an accepted trainer.json is refused when written again: ") + e.what());
  }
  if (k != j || k.dump() != j.dump()) fail("trainer.json does not read back equal:\n" + again);
  if (!j.contains("config")) return;
  parallama::RunConfig c;
  try {
    c = parallama::checkpoint_config(j, "trainer.json");
  } catch (const parallama::Error&) {
    return;
  }
  parallama::fuzz::check_config_round_trip(c, parallama::ConfigUse::run);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  check(text);
  // Sealing copies and dumps the value, by recursion: only what the reader itself would accept
  // for depth is sealed (deeper input it refuses, as the first check() showed).
  nlohmann::json j;
  try {
    j = parallama::parse_json_bounded(text.begin(), text.end(), 16);
  } catch (const std::exception&) {
    return 0;
  }
  if (j.is_object()) {
    parallama::seal_json(j);
    check(j.dump(1));
  }
  return 0;
}
