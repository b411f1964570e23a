// `parallama calibrate`: measures the machines of the job (every rank at once, as training runs
// them) for the planner's time model; see plan/profile.h.
#include "train/calibrate.h"

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "comm/launcher.h"
#include "io/checkpoint.h"
#include "kernels/matmul.h"
#include "tensor/arena.h"
#include "tensor/error.h"
#include "train/step.h"

namespace parallama {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Seconds of one run of f while every rank of world runs it too: after a warm-up, the same
// number of runs on every rank (about `budget` seconds' worth for the slowest, 1 to 50) started
// together, their mean. (The shortest run would be one that happened to have a core to itself
// while other ranks waited, not what training gets.)
template <class F>
double shared_time(comm::Group& world, F&& f, double budget) {
  f();  // warm-up
  auto t0 = Clock::now();
  f();
  double one = since(t0);
  world.all_reduce(&one, 1, DType::F64, comm::ReduceOp::Max);
  const int reps = std::clamp(static_cast<int>(budget / std::max(one, 1e-9)), 1, 50);
  world.barrier();
  t0 = Clock::now();
  for (int i = 0; i < reps; ++i) f();
  return since(t0) / reps;
}

// The GEMM shapes measured: the model's own projections (fused q|k|v, output, gate|up, down, the
// head) at micro-batches of 256, 1024 and 4096 tokens, or squares without a model.
std::vector<std::array<int64_t, 3>> gemm_shapes(const LlamaConfig* m, bool quick) {
  std::vector<std::array<int64_t, 3>> shapes;
  if (!m) {
    for (int64_t n : {128, 256, 512, 1024, 1536}) shapes.push_back({n, n, n});
    return shapes;
  }
  const int64_t C = m->dim, QKV = m->q_dim() + 2 * m->kv_dim(), F = m->ffn_dim;
  for (int64_t tokens :
       quick ? std::vector<int64_t>{256, 2048} : std::vector<int64_t>{256, 1024, 4096})
    for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{
             {QKV, C}, {C, m->q_dim()}, {2 * F, C}, {C, F}, {m->vocab_size, C}})
      shapes.push_back({tokens, n, k});
  return shapes;
}

// GFLOP/s at increasing size (cube root of M·N·K; shapes of one size averaged), every rank of
// the job multiplying at once.
std::vector<std::pair<double, double>> gemm_curve(Precision p, const LlamaConfig* m,
                                                  comm::Group& world, bool quick) {
  std::map<double, std::vector<double>> rates;
  for (const auto& shape : gemm_shapes(m, quick)) {
    const int64_t M = shape[0], N = shape[1], K = shape[2];  // captured below: not a binding
    Buffer a(M * K), b(N * K), c(M * N);
    for (int64_t i = 0; i < M * K; ++i) a.data()[i] = 0.001f * static_cast<float>(i % 97);
    for (int64_t i = 0; i < N * K; ++i) b.data()[i] = 0.001f * static_cast<float>(i % 89);
    std::vector<uint16_t> ah, bh;
    const DType t = operand_dtype(p);
    if (p != Precision::fp32) {
      ah.resize(M * K), bh.resize(N * K);
      kernels::to_lowp(t, ah.data(), a.data(), M * K);
      kernels::to_lowp(t, bh.data(), b.data(), N * K);
    }
    const double s = shared_time(
        world,
        [&] {
          if (p == Precision::fp32)
            kernels::gemm(false, true, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f, c.data(), N);
          else
            kernels::gemm_lp(t, false, true, M, N, K, ah.data(), K, bh.data(), K, 0.0f, c.data(),
                             N);
        },
        quick ? 0.05 : 0.3);
    const double size = std::round(std::cbrt(static_cast<double>(M) * N * K));
    rates[size].push_back(2.0 * M * N * K / s / 1e9);
  }
  std::vector<std::pair<double, double>> curve;
  for (const auto& [size, r] : rates) {
    double sum = 0;
    for (double x : r) sum += x;
    curve.emplace_back(size, sum / r.size());
  }
  return curve;
}

// Streaming GB/s of one rank, every rank at once: a = b + s·c over 32 MB arrays.
double triad_gbps(comm::Group& world) {
  const int64_t n = int64_t{8} << 20;
  Buffer a(n), b(n), c(n);
  for (int64_t i = 0; i < n; ++i) b.data()[i] = 1.0f, c.data()[i] = 2.0f;
  const double s = shared_time(
      world,
      [&] {
        float* x = a.data();
        const float *y = b.data(), *z = c.data();
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; ++i) x[i] = y[i] + 0.5f * z[i];
      },
      1.0);
  return 3.0 * n * sizeof(float) / s / 1e9;
}

// Microseconds a rank pays per 4 KiB page of memory it takes from the system and touches (every
// rank at once): 64 MB mapped, touched and handed back.
double page_fault_us(comm::Group& world) {
  const size_t bytes = size_t{64} << 20, page = 4096;
  const double s = shared_time(
      world,
      [&] {
        void* p =
            ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw Error("calibrate: cannot map 64 MB");
        auto* c = static_cast<volatile char*>(p);
        for (size_t i = 0; i < bytes; i += page) c[i] = 1;
        ::munmap(p, bytes);
      },
      0.5);
  return s / (bytes / page) * 1e6;
}

// One-way seconds per message of `bytes` between this rank and `peer` (every pair at once;
// peer < 0: this rank sits out), from round trips.
double one_way(comm::Group& world, int peer, int64_t bytes, int reps) {
  std::vector<char> buf(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
  world.barrier();
  if (peer < 0) return 0.0;
  const bool first = world.rank() < peer;
  const int tag = 29301;
  auto t0 = Clock::now();
  for (int i = 0; i < reps + 1; ++i) {
    if (i == 1) t0 = Clock::now();  // the first round trip warms the connection
    if (first) {
      world.send(buf.data(), bytes, peer, tag);
      world.recv(buf.data(), bytes, peer, tag);
    } else {
      world.recv(buf.data(), bytes, peer, tag);
      world.send(buf.data(), bytes, peer, tag);
    }
  }
  return since(t0) / (2.0 * reps);
}

// One-way seconds per message between compute, as training sends them: every rank multiplies a
// small matrix (about a millisecond) between round trips with its partner (peer < 0: it only
// multiplies); the time beyond the multiplies alone, per message. Where ranks share cores, this
// holds the wait for a partner the scheduler has set aside, which an idle round trip does not.
double loaded_one_way(comm::Group& world, int peer) {
  const int64_t n = 256, reps = 30;
  Buffer a(n * n), b(n * n), c(n * n);
  for (int64_t i = 0; i < n * n; ++i)
    a.data()[i] = b.data()[i] = 0.001f * static_cast<float>(i % 7);
  auto work = [&] {
    kernels::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  };
  char byte = 0;
  auto run = [&](bool exchange) {
    world.barrier();
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) {
      work();
      if (!exchange || peer < 0) continue;
      if (world.rank() < peer) {
        world.send(&byte, 1, peer, 29302);
        world.recv(&byte, 1, peer, 29302);
      } else {
        world.recv(&byte, 1, peer, 29302);
        world.send(&byte, 1, peer, 29302);
      }
    }
    return since(t0);
  };
  run(false);  // warm-up
  const double alone = run(false), with = run(true);
  return std::max(0.0, with - alone) / (2.0 * reps);
}

// A link's latency and per-rank bandwidth, averaged over the ranks whose partner is `peer`
// (every pair exchanging at once); nullopt when no rank has one. The latency is the larger of
// an idle round trip's and one between compute's.
std::optional<LinkProfile> measure_link(comm::Group& world, int peer) {
  const double idle = one_way(world, peer, 8, 30);
  const double lat = std::max(idle, loaded_one_way(world, peer));
  const int64_t big = int64_t{4} << 20;
  const double bw_s = one_way(world, peer, big, 3);
  double v[3] = {peer >= 0 ? lat : 0.0, peer >= 0 ? big * 8.0 / bw_s / 1e9 : 0.0,
                 peer >= 0 ? 1.0 : 0.0};
  world.all_reduce(v, 3, DType::F64);
  if (v[2] == 0) return std::nullopt;
  return LinkProfile{v[0] / v[2] * 1e6, v[1] / v[2]};
}

}  // namespace

Profile calibrate(comm::Group& world, const LlamaConfig* model, std::optional<Precision> only) {
  const auto start = Clock::now();
  Profile p;
  const int W = world.size(), me = world.rank();
  std::vector<std::string> host(W);
  for (int r = 0; r < W; ++r) host[r] = world.host(r).empty() ? "localhost" : world.host(r);
  std::map<std::string, int> per_host;
  for (int r = 0; r < W; ++r)
    if (per_host[host[r]]++ == 0) p.hosts.push_back(host[r]);
  p.ranks = W;
  for (const auto& [h, n] : per_host) p.ranks_per_host = std::max(p.ranks_per_host, n);
  p.threads_per_rank = configure_threads(0);
  p.cores_per_host = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  p.memory_gb_per_rank = machine_memory_bytes() / comm::local_ranks() / 1e9;
  const bool quick = only.has_value();
  for (Precision prec : {Precision::fp32, Precision::bf16, Precision::fp16})
    if (only ? prec == *only : prec != Precision::fp16)
      p.gemm.emplace_back(precision_name(prec), gemm_curve(prec, model, world, quick));
  p.memory_gbps = triad_gbps(world);
  p.page_fault_us = page_fault_us(world);
  // Within a host: neighbours paired (0-1, 2-3, ...) where they share one.
  int within = (me ^ 1) < W && host[me ^ 1] == host[me] ? me ^ 1 : -1;
  if (auto l = measure_link(world, within)) {
    p.within = *l;
  } else {  // one rank on each host: a message within it is a memory copy
    std::vector<char> a(4 << 20), b(4 << 20);
    const double s = shared_time(
        world, [&] { std::memcpy(b.data(), a.data(), a.size()); }, 0.2);
    p.within = {0.1, a.size() * 8.0 / s / 1e9};
  }
  // Between hosts: rank r with r + W/2 (hosts' ranks in blocks), else rank 0 with the first rank
  // of another host.
  if (p.hosts.size() > 1) {
    int between = W % 2 == 0 && host[(me + W / 2) % W] != host[me] ? (me + W / 2) % W : -1;
    auto l = measure_link(world, between);
    if (!l) {
      int other = 1;
      while (host[other] == host[0]) ++other;
      l = measure_link(world, me == 0 ? other : me == other ? 0 : -1);
    }
    p.between = l;
  }
  // Rank 0's measurements speak for every rank (they all measured at once).
  std::vector<double> gemm_flat;
  for (const auto& [name, c] : p.gemm)
    for (const auto& [size, r] : c) gemm_flat.push_back(r);
  gemm_flat.push_back(p.memory_gbps);
  world.all_reduce(gemm_flat.data(), static_cast<int64_t>(gemm_flat.size()), DType::F64);
  size_t i = 0;  // the mean over ranks
  for (auto& [name, c] : p.gemm)
    for (auto& [size, r] : c) r = gemm_flat[i++] / W;
  p.memory_gbps = gemm_flat[i] / W;
  p.seconds = since(start);
  return p;
}

int run_calibrate(comm::Group& world, const std::string& out, bool force,
                  const LlamaConfig* model) {
  int64_t exists = world.rank() == 0 && std::filesystem::exists(out) && !force ? 1 : 0;
  world.broadcast(&exists, 1, 0, DType::I64);  // rank 0 writes: its file system decides
  if (exists) throw Error(out + " exists; give another --out, or --force to replace it");
  const Profile p = calibrate(world, model);
  if (world.rank() != 0) return 0;
  write_file_atomically(out, profile_to_json(p).dump(1) + "\n");
  std::printf("calibrated %d rank(s) on %zu host(s) (%d per host, %d thread(s) each) in %.1f s\n",
              p.ranks, p.hosts.size(), p.ranks_per_host, p.threads_per_rank, p.seconds);
  for (const auto& [name, c] : p.gemm)
    std::printf("  GEMM %s: %.1f GFLOP/s per rank at size %.0f, %.1f at %.0f\n", name.c_str(),
                c.front().second, c.front().first, c.back().second, c.back().first);
  std::printf("  memory: %.1f GB/s per rank; %.1f GB per rank; %.2f us a page fault\n",
              p.memory_gbps, p.memory_gb_per_rank, p.page_fault_us);
  std::printf("  within a host: %.1f us, %.2f Gbit/s per rank\n", p.within.latency_us,
              p.within.gbps);
  if (p.between)
    std::printf("  between hosts: %.1f us, %.3f Gbit/s per rank\n", p.between->latency_us,
                p.between->gbps);
  std::printf("wrote %s (plan --profile %s)\n", out.c_str(), out.c_str());
  return 0;
}

}  // namespace parallama
