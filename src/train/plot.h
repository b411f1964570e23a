#pragma once
#include <string>

namespace parallama {

// Reads run_dir/metrics.jsonl and writes run_dir/loss.svg: training and validation loss against
// steps. Returns the path written. Throws Error when there are no metrics.
std::string plot_losses(const std::string& run_dir);

}  // namespace parallama
