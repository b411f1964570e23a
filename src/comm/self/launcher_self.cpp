// The launcher's part of a build without MPI (cmake -DPARALLAMA_MPI=OFF): every process is a
// world of its own; a job of several processes is refused.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "comm/launcher.h"
#include "tensor/error.h"

namespace parallama::comm {

namespace {

// The world size a launcher announces, 1 when none does.
int launched_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "SLURM_NTASKS"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 1;
}

std::vector<std::string> world_hosts;

}  // namespace

Group world(const Options& opt) {
  if (launched() && launched_size() > 1)
    throw Error(
        "this parallama was built without MPI (PARALLAMA_MPI=OFF): it runs as one "
        "process; build it with MPI to run " +
        std::to_string(launched_size()) + " processes");
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  world_hosts = {host};
  Group alone;
  alone.set_options(opt);
  return alone;
}

std::optional<std::vector<std::string>> gather_failures(const std::string& line, double) {
  return std::vector<std::string>{line};  // the only process failed: it says so itself
}

void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

const std::vector<std::string>& hosts() {
  return world_hosts;
}

}  // namespace parallama::comm
