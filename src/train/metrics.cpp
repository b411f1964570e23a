#include "train/metrics.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "comm/launcher.h"
#include "io/paths.h"
#include "tensor/error.h"

namespace parallama {

std::string format_duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

Progress::Progress(const std::string& run_dir, int64_t total_steps, int64_t resume_step,
                   int log_every)
    : total_(total_steps),
      first_step_(resume_step),
      log_every_(log_every),
      // MPI launchers hand processes a pseudo-terminal even when mpirun's own output is a pipe.
      tty_(isatty(STDOUT_FILENO) && !comm::launched()),
      start_(std::chrono::steady_clock::now()) {
  std::filesystem::create_directories(run_dir);
  const std::string path = run_dir + "/metrics.jsonl";
  std::vector<std::string> keep;
  if (resume_step > 0 && std::filesystem::exists(path)) {
    std::ifstream in = open_input(path, "metrics file", kMaxMetricsBytes);
    for (std::string line; std::getline(in, line);) {
      try {
        if (nlohmann::json::parse(line).value("step", int64_t{0}) <= resume_step)
          keep.push_back(line);
      } catch (const nlohmann::json::exception&) {  // a torn last line from a crash: dropped
      }
    }
  }
  path_ = path;
  if (const int err = out_.open(path)) fail(err);
  for (const auto& line : keep)
    if (const int err = out_.append(line)) fail(err);
}

void Progress::fail(int err) const {
  throw Error("cannot write " + path_ + ": " + std::strerror(err) +
              "; the run stops here (resume it from its last checkpoint with --resume auto)");
}

Progress::~Progress() {
  if (live_shown_) std::printf("\n");
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::message(const std::string& line) {
  if (live_shown_) std::printf("\r\033[K");
  std::printf("%s\n", line.c_str());
  live_shown_ = false;
  std::fflush(stdout);
}

void Progress::step(nlohmann::json j, int64_t tokens_this_step) {
  tokens_ += tokens_this_step;
  const double el = elapsed();
  const int64_t step = j["step"].get<int64_t>();
  j["elapsed"] = el;
  j["time"] = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                  .count();  // when the step ended, in Unix seconds (to line runs up)
  if (const int err = out_.append(j.dump())) fail(err);
  const double done = static_cast<double>(step - first_step_);
  const double eta = done > 0 ? el / done * static_cast<double>(total_ - step) : 0.0;
  char line[256];
  std::snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s",
                static_cast<long long>(step), static_cast<long long>(total_),
                j["loss"].get<double>(), j["lr"].get<double>(), j.value("tokens_per_s", 0.0),
                format_duration(eta).c_str());
  if (tty_) {
    std::printf("\r\033[K%s", line);
    live_shown_ = true;
    std::fflush(stdout);
  } else if (step % log_every_ == 0 || step == total_ || step == first_step_ + 1) {
    std::printf("%s\n", line);
    std::fflush(stdout);
  }
}

}  // namespace parallama
