#pragma once
// This process's place in a job: whether a launcher (mpirun, or srun with PMI/PMIx) started it,
// how many ranks share its machine, and the world group of every process. The launcher's
// environment is read here (launcher.cpp); the world comes from the MPI backend (mpi/), or, in a
// build without MPI (cmake -DPARALLAMA_MPI=OFF), from self/: one process. The world group is
// created once in main and passed down; nothing reads a global communicator.
#include <optional>
#include <string>
#include <vector>

#include "comm/group.h"

namespace parallama::comm {

// True when a launcher started this process (mpirun, srun with PMI/PMIx).
bool launched();

// Ranks on this machine, from the launcher's environment (1 when not launched).
int local_ranks();

// The world group: under a launcher every process of the job (MPI initialised once, finalised at
// exit); otherwise the group of this one process. A build without MPI refuses a launch of more
// than one process with an Error.
Group world(const Options& opt = {});

// Called by a process that failed, with the line it would print: waits up to wait_s for every
// process of the job to fail as well (on a communicator of its own, so that a collective in flight
// elsewhere cannot match it). When all did, rank 0 receives every rank's line (the others an empty
// list) and each can exit normally; nullopt when some process did not come (it is busy, or
// waiting for this one): then this one should print and abort the job.
std::optional<std::vector<std::string>> gather_failures(const std::string& line, double wait_s);

// Ends every process of the job with `code` (after this process printed why).
[[noreturn]] void abort_job(int code);

// The host name of every world rank, gathered at start (empty before world()).
const std::vector<std::string>& hosts();

}  // namespace parallama::comm
