#include "train/preempt.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <thread>

namespace parallama {

namespace {

std::atomic<int> received{0};
std::atomic<bool> guarded{false}, announce{true};

sigset_t preemption_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaddset(&set, sig);
  return set;
}

// Ends the process as the signal's default action does (every one of the three terminates).
[[noreturn]] void die_of(int sig) {
  std::signal(sig, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  raise(sig);
  _exit(128 + sig);  // not reached
}

// What a signal does: the first one under a PreemptionGuard is recorded (and announced), any
// other ends the process. Async-signal-safe (lock-free atomics, write, raise).
void take(int sig) {
  int none = 0;
  if (!guarded.load() || !received.compare_exchange_strong(none, sig)) die_of(sig);
  if (announce.load()) {
    static const char msg[] =
        "\nsignal received: stopping after this step with a checkpoint (again to stop at once)\n";
    const ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
  }
}

void wait_for_signals() {
  const sigset_t set = preemption_signals();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) == 0) take(sig);
  }
}

}  // namespace

void take_signals_on_a_thread() {
  static std::once_flag once;
  std::call_once(once, [] {
    const sigset_t set = preemption_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    // A thread that a library starts with these signals unblocked (MPI's runtime may) would
    // otherwise take one with the default action and end the process: there it is taken too.
    struct sigaction sa = {};
    sa.sa_handler = take;
    sigfillset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
    std::thread(wait_for_signals).detach();
  });
}

PreemptionGuard::PreemptionGuard(bool announce_signal) {
  take_signals_on_a_thread();
  received = 0;
  announce = announce_signal;
  guarded = true;
}

PreemptionGuard::~PreemptionGuard() {
  guarded = false;
}

int PreemptionGuard::signal_received() {
  return received.load();
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "a signal";
  }
}

}  // namespace parallama
