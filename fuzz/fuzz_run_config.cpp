// libFuzzer harness: the TOML run-config reader (parse_run_config_text) on arbitrary text, with
// command-line settings: the lines after a line "#overrides" are each one `section.key=value`,
// given as `--section.key=value` (through parse_overrides). A config accepted without checks
// (ConfigUse::none), and again when it passes the checks of ConfigUse::model and ::run, must
// round-trip through config_to_json and config_from_json (see config_round_trip.h). Refusals
// are parallama::Error; any other exception escapes and is reported as a crash.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "config_round_trip.h"
#include "tensor/error.h"
#include "train/run_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using parallama::ConfigUse;
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::string marker = "\n#overrides\n";
  const size_t at = input.find(marker);
  const std::string toml = input.substr(0, at);
  std::vector<std::string> args;
  if (at != std::string::npos) {
    size_t line = at + marker.size();
    while (line <= input.size()) {
      const size_t end = std::min(input.find('\n', line), input.size());
      args.push_back("--" + input.substr(line, end - line));
      line = end + 1;
    }
  }
  parallama::RunConfig c;
  try {
    c = parallama::parse_run_config_text(toml, "fuzz.toml", parallama::parse_overrides(args),
                                         ConfigUse::none);
  } catch (const parallama::Error&) {
    return 0;
  }
  parallama::fuzz::check_config_round_trip(c, ConfigUse::none);
  for (const ConfigUse use : {ConfigUse::model, ConfigUse::run}) {
    try {
      c.validate(use);
    } catch (const parallama::Error&) {
      return 0;
    }
    parallama::fuzz::check_config_round_trip(c, use);
  }
  return 0;
}
