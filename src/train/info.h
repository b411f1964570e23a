#pragma once
// `parallama info` and `parallama settings`.
#include <string>

#include "train/run_config.h"

namespace parallama {

int run_info(const RunConfig& cfg);
int run_settings();  // the table of every setting (Markdown), as docs/settings.md holds it

}  // namespace parallama
