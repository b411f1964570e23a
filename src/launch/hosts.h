#pragma once
// The hosts of `parallama launch` (launch/supervisor.h): the hostfile, and which hosts still
// answer after a failure.
#include <string>
#include <vector>

namespace parallama::launch {

struct Host {
  std::string name;
  int slots = 1;
};

// An Open MPI hostfile: one host a line ("node1 slots=4", or the name alone: 1 slot), '#'
// comments and blank lines ignored. Throws Error in one line for a file that is missing, holds no
// host, names a host twice or has a line it cannot read.
std::vector<Host> read_hostfile(const std::string& path);

// Which of `hosts` answer within timeout_s: through `agent` (the rsh agent mpirun uses: "agent
// HOST COMMAND"), each host runs `self launch --connect ADDR:PORT`, which opens a TCP connection
// back to this process over the network the job uses and names its host. A host answers when that
// connection arrives, so a host that is down, unreachable by the agent or cut off from this host's
// network does not. subnet (CIDR, e.g. "10.7.0.0/24"; empty: any) picks this host's address
// (without one and without any address but loopback: 127.0.0.1).
std::vector<bool> probe_hosts(const std::vector<Host>& hosts, const std::string& agent,
                              const std::string& self, const std::string& subnet, double timeout_s);

// The side of a probe that runs on a host: connects to addr_port ("ADDR:PORT") and sends this
// host's name. Returns 0 when it was delivered, else 1 (with one line on stderr).
int connect_back(const std::string& addr_port);

}  // namespace parallama::launch
