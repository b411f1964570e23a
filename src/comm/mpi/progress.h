#pragma once
// A thread of the MPI backend that keeps communication moving while the caller computes, and
// answers pings.
//
// OpenMPI advances a non-blocking operation (the bucketed gradient all-reduce of data
// parallelism, a pipeline send) only inside an MPI call: between two calls from the training
// loop a bucket sits still, and over a slow network most of the transfer lands after backward,
// exposed. The progress thread calls into MPI every `busy_interval_us` while any operation is in
// flight (every 5 ms otherwise), so data flows at the link's rate during compute. It needs
// MPI_THREAD_MULTIPLE; without it nothing starts and operations advance as before.
//
// Pings: every process's thread answers a ping on a communicator of its own, even while its
// main thread is blocked. A rank whose collective timed out pings its peers: those that do not
// answer are dead, stopped, or behind a cut link, and the timeout message names them.
#include <mpi.h>

#include <vector>

namespace parallama::comm::progress {

// Starts the thread (once; world must stay valid until stop()).
void start(MPI_Comm world, int busy_interval_us = 200);
// Stops and joins it: before MPI_Finalize.
void stop();
bool running();
// Operations in flight, counted by the backend.
void op_started();
void op_finished();
// The ranks of `world_ranks` (numbered in the world) that do not answer a ping within wait_s.
// Empty when all answered, or when no thread runs (nothing can be told). `busy` (when given)
// gets those that answered while their process waited for no communication.
std::vector<int> unanswered(const std::vector<int>& world_ranks, double wait_s,
                            std::vector<int>* busy = nullptr);

}  // namespace parallama::comm::progress
