#pragma once
// Graceful preemption. Schedulers send SIGTERM some time before SIGKILL (Slurm's --signal,
// Kubernetes' termination grace period); a person presses Ctrl-C (SIGINT). OpenMPI's mpirun ends
// its processes at once on SIGTERM but passes SIGUSR1 on to them: under mpirun, send SIGUSR1 to
// mpirun (Slurm: --signal=B:USR1@120 and a batch script that hands it on). The first such signal
// asks the run to stop: it finishes its step, writes a checkpoint and exits with
// kExitPreempted (train/trainer.h). A second one stops the process at once.
namespace parallama {

class PreemptionGuard {
 public:
  // Installs the handlers for SIGTERM, SIGINT and SIGUSR1; with announce, the first signal prints
  // a line on stderr (the reporting rank's).
  explicit PreemptionGuard(bool announce);
  ~PreemptionGuard();  // restores the previous ones
  PreemptionGuard(const PreemptionGuard&) = delete;
  PreemptionGuard& operator=(const PreemptionGuard&) = delete;

  // The first signal received (SIGTERM, SIGINT, SIGUSR1) since the guard was made, or 0.
  static int signal_received();
};

const char* signal_name(int sig);

}  // namespace parallama
