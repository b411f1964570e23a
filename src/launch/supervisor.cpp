#include "launch/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "launch/hosts.h"
#include "launch/process.h"
#include "tensor/error.h"
#include "train/preempt.h"
#include "train/run_dir.h"
#include "train/trainer.h"

namespace parallama::launch {

namespace fs = std::filesystem;

namespace {

struct Layout {
  int dp = 1, tp = 1, pp = 1, micro = 1;
  int procs() const { return dp * tp * pp; }
};

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// args without the options named (each with its value, as "--name V" or "--name=V") and flags.
std::vector<std::string> without(const std::vector<std::string>& args,
                                 const std::set<std::string>& valued,
                                 const std::set<std::string>& flags) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const std::string name = a.substr(0, a.find('='));
    if (flags.count(a)) continue;
    if (valued.count(name)) {
      if (name == a) ++i;  // the value follows
      continue;
    }
    out.push_back(a);
  }
  return out;
}

// train's arguments for a layout: the user's without the data-parallel size (and, relaunching,
// without where to start: the run continues from its own latest checkpoint), then the layout's.
std::vector<std::string> args_for(const std::vector<std::string>& user, const Layout& l,
                                  bool relaunch) {
  std::set<std::string> valued{"--dp", "--parallel.dp", "--train.micro_batches"}, flags;
  if (relaunch) valued.insert({"--resume", "--init"}), flags.insert("--force");
  std::vector<std::string> a = without(user, valued, flags);
  a.insert(a.end(),
           {"--dp", std::to_string(l.dp), "--train.micro_batches", std::to_string(l.micro)});
  if (relaunch) a.insert(a.end(), {"--resume", "auto"});
  return a;
}

int host_procs(const Host& h, const Options& opt) {
  return opt.ranks_per_host > 0 ? opt.ranks_per_host : h.slots;
}

// The layout for `procs` processes that keeps tp, pp and the global batch of `global` sequences:
// the largest dp that divides it, with more micro-batches per rank.
Layout layout_for(int procs, const Layout& first, int batch, int64_t global,
                  const std::vector<std::string>& user, const Resolve& resolve) {
  for (int dp = procs / (first.tp * first.pp); dp >= 1; --dp) {
    if (global % (int64_t{batch} * dp) != 0) continue;
    Layout l = first;
    l.dp = dp;
    l.micro = static_cast<int>(global / (int64_t{batch} * dp));
    try {
      resolve(args_for(user, l, true), l.procs());
      return l;
    } catch (const Error&) {  // e.g. a pipeline that needs more micro-batches: a smaller dp
    }
  }
  throw Error("no layout of the " + std::to_string(procs) + " processes left keeps tp " +
              std::to_string(first.tp) + ", pp " + std::to_string(first.pp) +
              " and the global batch of " + std::to_string(global) + " sequences");
}

// The last step metrics.jsonl records (0: none): how far an attempt got before it ended.
int64_t last_logged_step(const std::string& out_dir) {
  std::ifstream in(fs::path(out_dir) / "metrics.jsonl");
  int64_t last = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer())
      last = j["step"].get<int64_t>();
  }
  return last;
}

// The step of the run's newest complete checkpoint, 0 if none.
int64_t latest_step(const std::string& out_dir) {
  const std::string dir = latest_checkpoint(out_dir);
  return dir.empty() ? 0 : step_of(fs::path(dir).filename().string());
}

// Hosts that the job's errors name as lost: a process killed by a signal, a daemon that stopped
// answering, a rank that stopped answering.
void note_lost(const std::string& line, std::set<std::string>& lost) {
  static const std::regex patterns[] = {
      std::regex(R"(on node (\S+) exited on signal)"),
      std::regex(R"(Remote daemon: \S+ on node (\S+))"),
      std::regex(R"(no answer from rank \d+ \(host ([^)\s]+)\))")};
  std::smatch m;
  for (const std::regex& p : patterns)
    if (std::regex_search(line, m, p)) lost.insert(m[1].str());
}

struct Attempt {
  int code = 0;
  bool forwarded = false;  // a stop signal was passed on
  std::set<std::string> lost;
};

// Runs one mpirun to its end, passing its stderr through (and reading it), and a first stop
// signal on as SIGUSR1.
Attempt run_job(const std::vector<std::string>& cmd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw Error("launch: cannot make a pipe");
  const pid_t pid = spawn(cmd, fds[1]);
  ::close(fds[1]);
  Attempt a;
  std::string pending;
  int status = 0;
  bool done = false, eof = false;
  auto until = std::chrono::steady_clock::time_point::max();
  while (!eof && std::chrono::steady_clock::now() < until) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) eof = true;
      if (n > 0) {
        std::fwrite(buf, 1, static_cast<size_t>(n), stderr);
        pending.append(buf, static_cast<size_t>(n));
        for (size_t nl; (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1))
          note_lost(pending.substr(0, nl), a.lost);
      }
    }
    if (const int sig = PreemptionGuard::signal_received(); sig && !a.forwarded && !done) {
      std::fprintf(stderr, "launch: %s: asking the job to stop after its step (SIGUSR1)\n",
                   signal_name(sig));
      ::kill(pid, SIGUSR1);
      a.forwarded = true;
    }
    if (!done && ::waitpid(pid, &status, WNOHANG) == pid) {
      done = true;  // what is still in the pipe, for at most a second (a lost host's daemon
      until = std::chrono::steady_clock::now() + std::chrono::seconds(1);  // may hold it open)
    }
  }
  ::close(fds[0]);
  if (!done) ::waitpid(pid, &status, 0);
  note_lost(pending, a.lost);
  a.code = exit_code(status);
  return a;
}

}  // namespace

namespace {

std::string host_list(const std::vector<Host>& hosts, const Options& opt) {
  std::string s;
  for (const Host& h : hosts)
    s += (s.empty() ? "" : ",") + h.name + ":" + std::to_string(host_procs(h, opt));
  return s;
}

std::vector<Host> answering(const std::vector<Host>& hosts, const Options& opt,
                            const std::string& self, const std::set<std::string>& lost = {}) {
  const std::vector<bool> ok = probe_hosts(hosts, opt.agent, self, opt.subnet, opt.probe_timeout_s);
  std::vector<Host> out;
  for (size_t i = 0; i < hosts.size(); ++i)
    if (ok[i] && !lost.count(hosts[i].name)) out.push_back(hosts[i]);
  return out;
}

// Seconds of an attempt (from t0 to t1) after its last checkpoint step_to (the whole attempt when
// it wrote none): the work the next attempt recomputes.
double seconds_after(const std::string& out_dir, int64_t step_to, int64_t step_from,
                     std::chrono::system_clock::time_point t0,
                     std::chrono::system_clock::time_point t1) {
  const double all = std::chrono::duration<double>(t1 - t0).count();
  struct stat st {};
  if (step_to <= step_from ||
      ::stat((fs::path(out_dir) / ("step-" + std::to_string(step_to))).c_str(), &st) != 0)
    return all;
  const double written =
      static_cast<double>(st.st_mtim.tv_sec) + 1e-9 * static_cast<double>(st.st_mtim.tv_nsec);
  return std::min(all, std::chrono::duration<double>(t1.time_since_epoch()).count() - written);
}

struct Record {
  int attempt;
  const std::vector<Host>& hosts;
  const Layout& layout;
  int batch;
  const Attempt& result;
  int64_t checkpoint_from, checkpoint_to, last_step;
  double seconds, seconds_lost;
  std::chrono::system_clock::time_point started, ended;
};

double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// One line of RUN_DIR/launches.jsonl.
void record(const std::string& out_dir, const Record& r) {
  const Layout& l = r.layout;
  nlohmann::json j = {{"attempt", r.attempt},
                      {"hosts", nlohmann::json::array()},
                      {"layout",
                       {{"dp", l.dp},
                        {"tp", l.tp},
                        {"pp", l.pp},
                        {"micro_batches", l.micro},
                        {"batch_size", r.batch}}},
                      {"exit_code", r.result.code},
                      {"checkpoint_from", r.checkpoint_from},
                      {"checkpoint_to", r.checkpoint_to},
                      {"steps_done", std::max<int64_t>(0, r.last_step - r.checkpoint_from)},
                      {"seconds", r.seconds},
                      {"started_at", unix_seconds(r.started)},
                      {"ended_at", unix_seconds(r.ended)},
                      {"seconds_lost", r.seconds_lost}};
  for (const Host& h : r.hosts) j["hosts"].push_back(h.name);
  if (!r.result.lost.empty())
    j["lost"] = std::vector<std::string>(r.result.lost.begin(), r.result.lost.end());
  std::ofstream(fs::path(out_dir) / "launches.jsonl", std::ios::app) << j.dump() << "\n";
}

int procs_of(const std::vector<Host>& hosts, const Options& opt) {
  int n = 0;
  for (const Host& h : hosts) n += host_procs(h, opt);
  return n;
}

}  // namespace

int supervise(const Options& given, const std::vector<std::string>& train_args,
              const Resolve& resolve, const std::string& self) {
  Options opt = given;
  if (opt.agent.empty()) opt.agent = env_or("OMPI_MCA_plm_rsh_agent", "ssh");
  if (opt.subnet.empty()) opt.subnet = env_or("OMPI_MCA_oob_tcp_if_include", "");
  if (train_args.empty() || train_args.front() != "train")
    throw Error("launch: the command after -- must be train ARGS... (got '" +
                (train_args.empty() ? std::string() : train_args.front()) + "')");
  const std::vector<std::string> user(train_args.begin() + 1, train_args.end());
  const std::vector<Host> all = read_hostfile(opt.hostfile);
  if (opt.min_hosts > static_cast<int>(all.size()))
    throw Error("launch: --min-hosts " + std::to_string(opt.min_hosts) + " is more than the " +
                std::to_string(all.size()) + " hosts of " + opt.hostfile);
  // The run as the user asked for it on every process of every host: its global batch is kept.
  const RunConfig cfg = resolve(user, procs_of(all, opt));
  const Layout first{cfg.parallel.layout.dp, cfg.parallel.layout.tp, cfg.parallel.layout.pp,
                     cfg.train.micro_batches};
  const int batch = cfg.train.batch_size;
  const int64_t global = int64_t{batch} * first.micro * first.dp;
  const std::string out_dir = cfg.train.out_dir;
  PreemptionGuard guard(false);
  std::vector<Host> hosts = answering(all, opt, self);
  if (hosts.empty()) throw Error("launch: no host of " + opt.hostfile + " answers");
  if (static_cast<int>(hosts.size()) < opt.min_hosts)
    throw Error("launch: " + std::to_string(hosts.size()) + " of the hosts answer, fewer than " +
                "--min-hosts " + std::to_string(opt.min_hosts));
  Layout layout = hosts.size() == all.size()
                      ? first
                      : layout_for(procs_of(hosts, opt), first, batch, global, user, resolve);
  fs::create_directories(out_dir);
  for (int attempt = 1;; ++attempt) {
    const bool relaunch = attempt > 1 || hosts.size() != all.size();
    std::vector<std::string> cmd{opt.mpirun,
                                 "--host",
                                 host_list(hosts, opt),
                                 "-np",
                                 std::to_string(layout.procs()),
                                 "--mca",
                                 "plm_rsh_agent",
                                 opt.agent,
                                 self,
                                 "train"};
    for (const std::string& a : relaunch ? args_for(user, layout, attempt > 1) : user)
      cmd.push_back(a);
    std::printf(
        "launch: attempt %d on %zu hosts (%s): dp %d x tp %d x pp %d, %d micro-batches "
        "of %d a rank\n",
        attempt, hosts.size(), host_list(hosts, opt).c_str(), layout.dp, layout.tp, layout.pp,
        layout.micro, batch);
    std::fflush(stdout);
    const int64_t step_from = latest_step(out_dir);
    const auto t0 = std::chrono::system_clock::now();
    const Attempt a = run_job(cmd);
    const auto t1 = std::chrono::system_clock::now();
    const int64_t step_to = latest_step(out_dir);
    record(out_dir,
           {attempt, hosts, layout, batch, a, step_from, step_to, last_logged_step(out_dir),
            std::chrono::duration<double>(t1 - t0).count(),
            a.code == 0 ? 0.0 : seconds_after(out_dir, step_to, step_from, t0, t1), t0, t1});
    if (a.code == 0) return 0;
    if (a.forwarded || a.code == kExitPreempted) return a.code;
    const std::vector<Host> left = answering(hosts, opt, self, a.lost);
    if (left.size() == hosts.size() && step_to == step_from) {
      std::fprintf(stderr,
                   "launch: the job failed (exit code %d) with every host answering and "
                   "no new checkpoint: not relaunching\n",
                   a.code);
      return a.code;
    }
    if (attempt > opt.max_restarts) {
      std::fprintf(stderr,
                   "launch: the job failed (exit code %d); stopping after %d restarts "
                   "(--max-restarts)\n",
                   a.code, opt.max_restarts);
      return a.code;
    }
    if (static_cast<int>(left.size()) < opt.min_hosts) {
      std::fprintf(stderr,
                   "launch: the job failed (exit code %d) and %zu hosts answer, fewer "
                   "than --min-hosts %d: stopping\n",
                   a.code, left.size(), opt.min_hosts);
      return a.code;
    }
    try {
      layout = layout_for(procs_of(left, opt), first, batch, global, user, resolve);
    } catch (const Error& e) {
      std::fprintf(stderr, "launch: the job failed (exit code %d) and %s: stopping\n", a.code,
                   e.what());
      return a.code;
    }
    for (const Host& h : hosts) {
      bool kept = false;
      for (const Host& k : left) kept |= k.name == h.name;
      if (!kept) std::fprintf(stderr, "launch: host %s is lost\n", h.name.c_str());
    }
    hosts = left;
  }
}

}  // namespace parallama::launch
