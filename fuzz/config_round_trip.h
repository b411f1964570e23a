#pragma once
// The round-trip property of the run configuration, shared by the harnesses that produce one:
// what config_to_json writes for an accepted config c, config_from_json reads back (as a JSON
// value and through its text, as trainer.json stores it) to a config with the same JSON.
#include <nlohmann/json.hpp>

#include <string>

#include "fuzz_util.h"
#include "tensor/error.h"
#include "train/run_config.h"

namespace parallama::fuzz {

inline void check_config_round_trip(const RunConfig& c, ConfigUse use) {
  const nlohmann::json j = config_to_json(c);
  const std::string text = j.dump();
  for (const bool through_text : {false, true}) {
    RunConfig back;
    try {
      back = through_text ? config_from_json(nlohmann::json::parse(j.dump(1)), "x", use)
                          : config_from_json(j, "x", use);
    } catch (const Error& e) {
      fail(std::string("config_from_json refuses what config_to_json wrote: ") + e.what() + "\n" +
           text);
    }
    const std::string again = config_to_json(back).dump();
    if (again != text) fail("the config does not read back the same:\n" + text + "\n" + again);
  }
}

}  // namespace parallama::fuzz
