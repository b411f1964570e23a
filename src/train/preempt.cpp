#include "train/preempt.h"

#include <unistd.h>

#include <csignal>
#include <cstring>

namespace parallama {

namespace {

volatile std::sig_atomic_t received = 0;
bool announce = true;
struct sigaction previous_term, previous_int, previous_usr1;

void on_signal(int sig) {
  if (received) {  // the second: stop at once, as the signal would have
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  received = sig;
  if (!announce) return;
  static const char msg[] =
      "\nsignal received: stopping after this step with a checkpoint (again to stop at once)\n";
  const ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)ignored;
}

}  // namespace

PreemptionGuard::PreemptionGuard(bool announce_signal) {
  received = 0;
  announce = announce_signal;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, &previous_term);
  sigaction(SIGINT, &sa, &previous_int);
  sigaction(SIGUSR1, &sa, &previous_usr1);
}

PreemptionGuard::~PreemptionGuard() {
  sigaction(SIGTERM, &previous_term, nullptr);
  sigaction(SIGINT, &previous_int, nullptr);
  sigaction(SIGUSR1, &previous_usr1, nullptr);
}

int PreemptionGuard::signal_received() {
  return received;
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
