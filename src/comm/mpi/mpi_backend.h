#pragma once
// The MPI backend (OpenMPI): the communication of every group of a job started by a launcher, and
// the world, failure gathering, abort and host names of comm/launcher.h.
#include "comm/launcher.h"
