#pragma once
// Graceful preemption. Schedulers send SIGTERM some time before SIGKILL (Slurm's --signal,
// Kubernetes' termination grace period); a person presses Ctrl-C (SIGINT). OpenMPI's mpirun ends
// its processes at once on SIGTERM but passes SIGUSR1 on to them: under mpirun, send SIGUSR1 to
// mpirun (Slurm: --signal=B:USR1@120 and a batch script that hands it on). The first such signal
// asks the run to stop: it finishes its step, writes a checkpoint and exits with
// kExitPreempted (train/trainer.h). A second one stops the process at once.
//
// The signals are taken by a thread of their own, never by a handler that interrupts
// computation: optimized GEMM kernels (oneDNN's JIT sgemm) keep data below the stack pointer,
// and a signal frame written onto their stack overwrote it, which corrupted the heap in about
// one stop in four. Every thread of ours blocks them; a handler that does the same as the thread
// is installed only for threads that a library starts with them unblocked (MPI's runtime), which
// compute nothing: without it such a thread took the signal's default action and ended the
// process (seen under mpirun across hosts: a rank ended by SIGUSR1 instead of stopping).
namespace parallama {

// Blocks SIGTERM, SIGINT and SIGUSR1 in the calling thread (and so in every thread it starts
// after) and starts the thread that waits for them. Call it first in main, before any other
// thread exists (OpenMP's, MPI's). Without a PreemptionGuard, such a signal ends the process as
// its default action would. Idempotent.
void take_signals_on_a_thread();

class PreemptionGuard {
 public:
  // From now on the first signal is recorded (with announce, a line on stderr says so) and the
  // second ends the process. Starts the signal thread if main did not.
  explicit PreemptionGuard(bool announce);
  ~PreemptionGuard();  // signals end the process again
  PreemptionGuard(const PreemptionGuard&) = delete;
  PreemptionGuard& operator=(const PreemptionGuard&) = delete;

  // The first signal received (SIGTERM, SIGINT, SIGUSR1) since the guard was made, or 0.
  static int signal_received();
};

const char* signal_name(int sig);

}  // namespace parallama
