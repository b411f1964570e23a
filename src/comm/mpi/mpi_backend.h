#pragma once
// The MPI backend (OpenMPI), and the process-level start and stop of MPI. The world group is
// created once in main and passed down; nothing reads a global communicator.
#include <string>

#include "comm/group.h"

namespace parallama::comm {

// True when this process was started by an MPI launcher (mpirun, srun with PMI/PMIx).
bool launched_by_mpi();

// Initialises MPI (once) and returns the world group. Finalised at exit.
Group mpi_world(const Options& opt = {});

// Ends every process of the job with `code` (after this process printed why).
[[noreturn]] void mpi_abort(int code);

// Ranks on this machine, from the launcher's environment (1 when not launched by MPI).
int local_ranks();

}  // namespace parallama::comm
