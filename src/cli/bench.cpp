// `parallama bench`: training steps on random tokens; median step time, tokens/s, GFLOP/s and
// MFU against the fp32 GEMM peak of oneDNN measured on this machine with the same threads.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "cli/commands.h"
#include "kernels/matmul.h"
#include "tensor/arena.h"
#include "train/step.h"

namespace parallama {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best of several timed square GEMMs (n = 2048), in GFLOP/s.
double measure_gemm_peak() {
  const int64_t n = 2048;
  Buffer a(n * n), b(n * n), c(n * n);
  for (int64_t i = 0; i < n * n; ++i)
    a.data()[i] = b.data()[i] = 0.001f * static_cast<float>(i % 97);
  kernels::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(),
                n);  // warm-up
  double best = 0.0;
  const auto start = Clock::now();
  for (int rep = 0; rep < 20 && (rep < 3 || seconds_since(start) < 2.0); ++rep) {
    const auto t0 = Clock::now();
    kernels::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::max(best, 2.0 * n * n * n / seconds_since(t0) / 1e9);
  }
  return best;
}

}  // namespace

int run_bench(const RunConfig& cfg, bool json) {
  const int threads = configure_threads(cfg.train.threads);
  const int64_t B = cfg.train.batch_size, T = cfg.train.seq_len, V = cfg.model.vocab_size;
  TrainState st(cfg);
  std::mt19937_64 rng(cfg.train.seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (auto& x : tokens) x = tok(rng);
  for (auto& x : targets) x = tok(rng);

  std::vector<double> times;
  float loss = 0.0f;
  for (int s = 0; s < cfg.bench.warmup + cfg.bench.steps; ++s) {
    const auto t0 = Clock::now();
    loss = st.step(tokens.data(), targets.data(), cfg.optim.lr);
    if (s >= cfg.bench.warmup) times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double peak = measure_gemm_peak();

  const LlamaConfig& m = cfg.model;
  const double flops_per_token = 6.0 * static_cast<double>(m.num_matmul_params()) +
                                 12.0 * m.n_layers * static_cast<double>(T) * m.dim;
  const double tokens_per_s = static_cast<double>(B * T) / median;
  const double gflops = flops_per_token * static_cast<double>(B * T) / median / 1e9;
  const char* formula = "6*N + 12*L*T*C per token (N = matmul parameters incl. output head)";

  std::printf("model %s: %.2fM parameters (%.2fM in matmuls), batch %lld x %lld, %d threads\n",
              m.name.c_str(), m.num_params() / 1e6, m.num_matmul_params() / 1e6,
              static_cast<long long>(B), static_cast<long long>(T), threads);
  std::printf("step: median %.4f s (min %.4f, max %.4f, %d steps after %d warm-up), loss %.4f\n",
              median, times.front(), times.back(), cfg.bench.steps, cfg.bench.warmup, loss);
  std::printf("throughput: %.0f tokens/s, %.1f GFLOP/s [%s]\n", tokens_per_s, gflops, formula);
  std::printf("MFU: %.1f%% of the measured oneDNN fp32 GEMM peak %.1f GFLOP/s (%d threads)\n",
              100.0 * gflops / peak, peak, threads);
  if (json) {
    nlohmann::json j = {{"framework", "parallama"},
                        {"model", m.name},
                        {"params", m.num_params()},
                        {"matmul_params", m.num_matmul_params()},
                        {"batch_size", B},
                        {"seq_len", T},
                        {"threads", threads},
                        {"ranks", 1},
                        {"steps", cfg.bench.steps},
                        {"warmup", cfg.bench.warmup},
                        {"median_step_s", median},
                        {"min_step_s", times.front()},
                        {"max_step_s", times.back()},
                        {"tokens_per_s", tokens_per_s},
                        {"gflops", gflops},
                        {"flop_formula", formula},
                        {"peak_gflops", peak},
                        {"mfu", gflops / peak},
                        {"loss", loss},
                        {"activation_bytes", st.model.activation_bytes()}};
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace parallama
