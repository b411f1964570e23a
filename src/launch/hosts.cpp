#include "launch/hosts.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "launch/process.h"
#include "tensor/error.h"

namespace parallama::launch {

std::vector<Host> read_hostfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("hostfile " + path + ": cannot be read (" + std::strerror(errno) + ")");
  std::vector<Host> hosts;
  std::set<std::string> seen;
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    Host h;
    if (!(words >> h.name)) continue;
    const std::string where = "hostfile " + path + " line " + std::to_string(n) + ": ";
    for (std::string w; words >> w;) {
      if (w.rfind("slots=", 0) != 0) throw Error(where + "'" + w + "' is not slots=N");
      char* end = nullptr;
      const long s = std::strtol(w.c_str() + 6, &end, 10);
      if (*end != '\0' || end == w.c_str() + 6 || s < 1 || s > 4096)
        throw Error(where + "'" + w + "' is not slots=N with N a whole number of at least 1");
      h.slots = static_cast<int>(s);
    }
    if (!seen.insert(h.name).second) throw Error(where + "host " + h.name + " is listed twice");
    hosts.push_back(h);
  }
  if (hosts.empty()) throw Error("hostfile " + path + ": no host in it");
  return hosts;
}

namespace {

// This host's IPv4 address inside subnet ("A.B.C.D/N"; empty: the first that is not loopback).
std::string local_address(const std::string& subnet) {
  uint32_t net = 0, mask = 0;
  if (!subnet.empty()) {
    const size_t slash = subnet.find('/');
    in_addr a{};
    const int bits = slash == std::string::npos ? 32 : std::atoi(subnet.c_str() + slash + 1);
    if (inet_pton(AF_INET, subnet.substr(0, slash).c_str(), &a) != 1 || bits < 0 || bits > 32)
      throw Error("launch: '" + subnet + "' is not an IPv4 subnet (A.B.C.D/N)");
    mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
    net = ntohl(a.s_addr) & mask;
  }
  ifaddrs* all = nullptr;
  if (getifaddrs(&all) != 0) throw Error("launch: cannot list this host's addresses");
  std::string found;
  for (ifaddrs* i = all; i && found.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    const in_addr a = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr;
    const uint32_t h = ntohl(a.s_addr);
    if (subnet.empty() ? (h >> 24) == 127 : (h & mask) != net) continue;
    char text[INET_ADDRSTRLEN];
    found = inet_ntop(AF_INET, &a, text, sizeof text);
  }
  freeifaddrs(all);
  if (found.empty() && subnet.empty()) return "127.0.0.1";  // a machine on its own
  if (found.empty())
    throw Error("launch: this host has no IPv4 address" +
                (subnet.empty() ? std::string() : " in " + subnet));
  return found;
}

// One host under two spellings: equal, or equal up to the first '.' (node1 and node1.cluster).
bool same_host(const std::string& a, const std::string& b) {
  return a == b || a.substr(0, a.find('.')) == b.substr(0, b.find('.'));
}

}  // namespace

std::vector<bool> probe_hosts(const std::vector<Host>& hosts, const std::string& agent,
                              const std::string& self, const std::string& subnet,
                              double timeout_s) {
  const std::string addr = local_address(subnet);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
  socklen_t len = sizeof sa;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(fd, 64) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
    throw Error("launch: cannot listen on " + addr + ": " + std::strerror(errno));
  const std::string back = addr + ":" + std::to_string(ntohs(sa.sin_port));
  std::vector<pid_t> probes;
  for (const Host& h : hosts)
    probes.push_back(spawn({agent, h.name, self + " launch --connect " + back}, -1, true));
  std::vector<bool> answered(hosts.size(), false);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  size_t left = hosts.size();
  while (left > 0 && std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    char name[256] = {};
    pollfd q{c, POLLIN, 0};
    if (::poll(&q, 1, 2000) > 0) {
      const ssize_t n = ::read(c, name, sizeof name - 1);
      name[n > 0 ? n : 0] = '\0';
    }
    ::close(c);
    for (size_t i = 0; i < hosts.size(); ++i)
      if (!answered[i] && same_host(hosts[i].name, name)) answered[i] = true, --left;
  }
  ::close(fd);
  for (pid_t pid : probes) {  // a probe still waiting (an unreachable host) is ended
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  return answered;
}

int connect_back(const std::string& addr_port) {
  const size_t colon = addr_port.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  const int port = colon == std::string::npos ? 0 : std::atoi(addr_port.c_str() + colon + 1);
  if (port <= 0 || port > 65535 ||
      inet_pton(AF_INET, addr_port.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    std::fprintf(stderr, "error: --connect %s: not ADDR:PORT\n", addr_port.c_str());
    return 1;
  }
  sa.sin_port = htons(static_cast<uint16_t>(port));
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  const bool ok = fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
                  ::write(fd, name, std::strlen(name)) == static_cast<ssize_t>(std::strlen(name));
  if (!ok)
    std::fprintf(stderr, "error: cannot reach %s: %s\n", addr_port.c_str(), std::strerror(errno));
  if (fd >= 0) ::close(fd);
  return ok ? 0 : 1;
}

}  // namespace parallama::launch
