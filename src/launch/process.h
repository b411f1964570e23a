#pragma once
// Child processes of `parallama launch`: started with the signals this program blocks
// (train/preempt.h) unblocked again and at their default actions, so that mpirun and the probes
// handle SIGTERM, SIGINT and SIGUSR1 as they normally would.
#include <sys/types.h>

#include <string>
#include <vector>

namespace parallama::launch {

// Starts argv[0] (searched in PATH) with argv; its stderr goes to err_fd when err_fd >= 0; quiet:
// its stdin, stdout and (without err_fd) stderr are /dev/null. Throws Error when it cannot be
// started.
pid_t spawn(const std::vector<std::string>& argv, int err_fd = -1, bool quiet = false);

// The exit status of a finished child as a shell reports it: its code, or 128 + its signal.
int exit_code(int status);

}  // namespace parallama::launch
