#pragma once
// The parallel layout and the gradient-synchronization settings of a run (the [parallel], [ps],
// [local] and [diloco] sections of the configuration).
#include <cstdint>
#include <string>
#include <vector>

#include "optim/optimizer.h"
#include "parallel/schedule.h"
#include "tensor/dtype.h"
#include "tensor/names.h"

namespace parallama {

// How replicas stay together (parallel.sync, --sync): "allreduce" | "ps" | "ps-async" | "local" |
// "diloco". Each parse_* throws Error naming the choices; each *_name gives the setting's text.
enum class Sync { allreduce, ps, ps_async, local, diloco };
constexpr std::array<Named<Sync>, 5> names(Sync) {
  return {{{Sync::allreduce, "allreduce"},
           {Sync::ps, "ps"},
           {Sync::ps_async, "ps-async"},
           {Sync::local, "local"},
           {Sync::diloco, "diloco"}}};
}
Sync parse_sync(const std::string& name);
const char* sync_name(Sync s);

// How a pipeline split without pp_layers weighs the stages (parallel.pp_balance): "cost" (the FLOP
// estimate), "measure" (a short timed pass on this machine) or "even" (layers alone).
enum class PpBalance { cost, measure, even };
constexpr std::array<Named<PpBalance>, 3> names(PpBalance) {
  return {{{PpBalance::cost, "cost"}, {PpBalance::measure, "measure"}, {PpBalance::even, "even"}}};
}
PpBalance parse_pp_balance(const std::string& name);
const char* pp_balance_name(PpBalance b);

// How gradient buckets travel over the data-parallel group (parallel.compress): "none" (fp32),
// "bf16" (half the bytes, summed in fp32) or "int8" (blockwise, about a quarter of the bytes,
// summed in fp32, with error feedback); see parallel/data_parallel.h. Before this setting,
// parallel.reduce_dtype = "fp32" | "bf16" said the same of none and bf16, and is still read so.
// "powersgd": each matrix as two thin factors of rank parallel.powersgd_rank, in fp32, with
// error feedback (parallel/powersgd.h).
enum class Compress { none, bf16, int8, powersgd };
constexpr std::array<Named<Compress>, 4> names(Compress) {
  return {{{Compress::none, "none"},
           {Compress::bf16, "bf16"},
           {Compress::int8, "int8"},
           {Compress::powersgd, "powersgd"}}};
}
constexpr DType wire_dtype(Compress c) {  // what comm puts on the wire
  return c == Compress::bf16 ? DType::BF16 : c == Compress::int8 ? DType::I8 : DType::F32;
}
// Whether each rank keeps what compression dropped and adds it to the next step's gradient: for
// int8, whose rounding is coarse, and powersgd; bf16 keeps its rounding (2^-9 relative, nearest
// even).
constexpr bool error_feedback(Compress c) {
  return c == Compress::int8 || c == Compress::powersgd;
}
Compress parse_compress(const std::string& name);
const char* compress_name(Compress c);

// How DiLoCo's outer gradient (each worker's parameter change over its inner steps) travels
// (diloco.compress): "none" (fp32, exact), "int8" or "int4" (blockwise, summed in fp32, each with
// error feedback of its own: what the encoding dropped joins the next outer gradient).
enum class OuterCompress { none, int8, int4 };
constexpr std::array<Named<OuterCompress>, 3> names(OuterCompress) {
  return {{{OuterCompress::none, "none"},
           {OuterCompress::int8, "int8"},
           {OuterCompress::int4, "int4"}}};
}
constexpr DType wire_dtype(OuterCompress c) {
  return c == OuterCompress::int8 ? DType::I8 : c == OuterCompress::int4 ? DType::I4 : DType::F32;
}
OuterCompress parse_outer_compress(const std::string& name);
const char* outer_compress_name(OuterCompress c);

// How the data-parallel ranks share each global batch (parallel.balance): "static" (equal shares)
// or "dynamic" (shares that follow each rank's measured speed; see parallel/balance.h).
enum class Balance { fixed, dynamic };
constexpr std::array<Named<Balance>, 2> names(Balance) {
  return {{{Balance::fixed, "static"}, {Balance::dynamic, "dynamic"}}};
}
Balance parse_balance(const std::string& name);
const char* balance_name(Balance b);

// The [parallel], [ps], [local] and [diloco] settings, by concern.

// Where the processes go: the dp × tp × pp mesh and the pipeline over it.
struct LayoutConfig {
  int dp = 1;  // data-parallel replicas (under a launcher, unless set: processes over tp · pp)
  int tp = 1;  // tensor-parallel ranks per replica (heads, FFN, vocabulary)
  int pp = 1;  // pipeline stages (dp · tp · pp = processes)
  std::vector<int> pp_layers;  // layers per (virtual) stage by hand; empty: balanced by cost
  PipeSchedule pp_schedule = PipeSchedule::OneFOneB;
  int pp_virtual = 1;    // model chunks per rank (interleaved)
  std::string pp_trace;  // write the pipeline timeline here (Chrome trace JSON)
  // Stage boundaries without pp_layers: cost (FLOP estimate), measure (a short timed pass of the
  // embedding, one layer and the head on this machine) or even (layers alone).
  PpBalance pp_balance = PpBalance::cost;
};

// How gradients travel over the data-parallel group, and what it shards.
struct GradConfig {
  double bucket_mb = 4.0;  // gradient all-reduce bucket size
  // The embedding's gradient all-reduced as its non-zero rows alone (exact; fp32 --sync
  // allreduce without ZeRO, untied embeddings). See parallel/data_parallel.h.
  bool sparse_embedding = true;
  // How gradient buckets travel over the data-parallel group, from step compress_after + 1 on
  // (the steps before travel in fp32). --sync allreduce only.
  Compress compress = Compress::none;
  int64_t compress_after = 0;
  int powersgd_rank = 4;  // compress = powersgd: the factors' rank
  // ZeRO over the data-parallel group: 0 off; 1 optimizer state sharded (gradients
  // reduce-scattered, owned slices updated, parameters all-gathered); 2 also the gradients kept.
  int zero = 0;
};

// How replicas stay together, and each strategy's own settings.
struct StrategyConfig {
  Sync sync = Sync::allreduce;
  int ps_servers = 1;            // ps, ps-async: server ranks (the last ones)
  int ps_max_staleness = 2;      // ps-async: how many steps a worker may run ahead of the slowest
  int local_period = 8;          // local: steps between parameter averages
  int diloco_inner_steps = 16;   // diloco: inner AdamW steps between outer steps
  float diloco_outer_lr = 0.7f;  // diloco: outer Nesterov SGD learning rate
  float diloco_outer_momentum = 0.9f;
  OuterCompress diloco_compress = OuterCompress::none;  // diloco: how the outer gradient travels
};

// How the data-parallel ranks share each global batch: static (equal shares) or dynamic (shares
// of micro-batches that follow each rank's measured speed, re-planned every `every` steps, at most
// `cap` times the equal share). See parallel/balance.h.
struct BalanceConfig {
  Balance mode = Balance::fixed;
  int every = 10;
  double cap = 2.0;
};

// How the ranks watch each other: collectives checked and timed out, links probed.
struct WatchConfig {
  bool check_collectives = false;  // stamp every collective and compare across ranks (debug)
  double timeout_s = 120.0;        // a collective that takes longer is an error, not a hang
  // Network stragglers: every link_probe_every steps (and at the third step of a run) each rank
  // times a message from a rank on another host (train/link_watch.h); 0 turns the probe off.
  int link_probe_every = 100;
};

struct ParallelConfig {
  LayoutConfig layout;
  GradConfig grads;
  StrategyConfig strategy;
  BalanceConfig balance;
  WatchConfig watch;
  int servers() const {
    return strategy.sync == Sync::ps || strategy.sync == Sync::ps_async ? strategy.ps_servers : 0;
  }
};

// What a synchronizer needs of the run: the parallel settings, clipping and the learning-rate
// schedule (parameter servers step the optimizer themselves).
struct SyncConfig {
  ParallelConfig parallel;
  float grad_clip = 1.0f;  // global-norm clipping; 0 = off
  OptimConfig optim;
  int64_t steps = 0;  // the schedule's length
};

}  // namespace parallama
