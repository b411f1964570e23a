#pragma once
// `parallama launch`: a supervisor over mpirun that keeps a training run going when hosts fail.
// It starts `train ARGS...` on every process of the hostfile's hosts; when the job fails, it asks
// each host to call back over the network (launch/hosts.h), drops the hosts that do not and
// those whose processes mpirun saw killed by a signal, chooses a layout for the processes left
// (tp and pp kept, dp shrunk, more micro-batches per rank so that the global batch stays the
// same: parallama's sample order does not depend on the layout, so the run continues the same
// trajectory), and relaunches with --resume auto. Each attempt is a line of
// RUN_DIR/launches.jsonl. A first SIGTERM, SIGINT or SIGUSR1 to the supervisor reaches the job
// as SIGUSR1 (mpirun passes that one on): every rank stops after a step with a checkpoint, and
// nothing is relaunched.
#include <functional>
#include <string>
#include <vector>

#include "train/run_config.h"

namespace parallama::launch {

struct Options {
  std::string hostfile;
  int ranks_per_host = 0;  // 0: each host's slots
  int min_hosts = 1;       // stop when fewer answer
  int max_restarts = 3;    // relaunches at the most
  std::string agent;       // the rsh agent; empty: OMPI_MCA_plm_rsh_agent, else ssh
  std::string subnet;      // where hosts call back; empty: OMPI_MCA_oob_tcp_if_include, else any
  std::string mpirun = "mpirun";
  double probe_timeout_s = 5;
};

// The run configuration `train` would have with args on nprocs processes (throws Error when it
// has none: a bad setting, or a layout that does not fit).
using Resolve = std::function<RunConfig(const std::vector<std::string>& args, int nprocs)>;

// Runs train_args ("train", then its arguments) to the end; returns the exit code to exit with.
// Throws Error (one line, before anything runs) for bad input: the hostfile, --min-hosts above
// the hosts listed, arguments that are not a train command or that train would refuse, or no
// host (or fewer than --min-hosts) answering.
int supervise(const Options& opt, const std::vector<std::string>& train_args,
              const Resolve& resolve, const std::string& self);

}  // namespace parallama::launch
