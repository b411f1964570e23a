#pragma once
// The MPI backend (OpenMPI), and the process-level start and stop of MPI. The world group is
// created once in main and passed down; nothing reads a global communicator.
#include <optional>
#include <string>
#include <vector>

#include "comm/group.h"

namespace parallama::comm {

// True when this process was started by an MPI launcher (mpirun, srun with PMI/PMIx).
bool launched_by_mpi();

// Initialises MPI (once) and returns the world group. Finalised at exit.
Group mpi_world(const Options& opt = {});

// Called by a process that failed, with the line it would print: waits up to wait_s for every
// process of the job to fail as well (on a communicator of its own, so that a collective in flight
// elsewhere cannot match it). When all did, rank 0 receives every rank's line (the others an empty
// list) and each can exit normally; nullopt when some process did not come (it is busy, or
// waiting for this one): then this one should print and abort the job.
std::optional<std::vector<std::string>> mpi_gather_failures(const std::string& line, double wait_s);

// Ends every process of the job with `code` (after this process printed why).
[[noreturn]] void mpi_abort(int code);

// The host name of every world rank, gathered at start (empty before mpi_world()).
const std::vector<std::string>& hosts();

// Ranks on this machine, from the launcher's environment (1 when not launched by MPI).
int local_ranks();

}  // namespace parallama::comm
