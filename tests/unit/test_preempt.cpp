// Preemption signals are taken by a thread of their own: every thread started after
// take_signals_on_a_thread() blocks them (a handler never interrupts a computing thread, whose
// stack below the stack pointer an optimized kernel may be using), and a signal sent to the
// process reaches the guard.
#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <thread>
#include <vector>

#include "kernels/matmul.h"
#include "train/preempt.h"

namespace parallama {

TEST(Preemption, SignalsAreTakenByTheirOwnThread) {
  take_signals_on_a_thread();
  bool blocked = false;
  std::thread([&] {
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, nullptr, &now);
    blocked = sigismember(&now, SIGINT) && sigismember(&now, SIGTERM) && sigismember(&now, SIGUSR1);
  }).join();
  EXPECT_TRUE(blocked) << "a thread started later can be interrupted by a preemption signal";

  PreemptionGuard guard(false);
  EXPECT_EQ(PreemptionGuard::signal_received(), 0);
  // Signals while this thread multiplies matrices: the first is recorded, nothing is disturbed.
  std::vector<float> a(128 * 128, 0.5f), b(128 * 128, 0.25f), c(128 * 128);
  kernels::gemm(false, false, 128, 128, 128, 1.0f, a.data(), 128, b.data(), 128, 0.0f, c.data(),
                128);
  ::kill(::getpid(), SIGUSR1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (PreemptionGuard::signal_received() == 0 && std::chrono::steady_clock::now() < deadline)
    kernels::gemm(false, false, 128, 128, 128, 1.0f, a.data(), 128, b.data(), 128, 0.0f, c.data(),
                  128);
  EXPECT_EQ(PreemptionGuard::signal_received(), SIGUSR1);
  EXPECT_FLOAT_EQ(c[0], 128 * 0.5f * 0.25f);
}

}  // namespace parallama
