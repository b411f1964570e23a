#pragma once
// The parallel layout and the gradient-synchronization settings of a run (the [parallel], [ps],
// [local] and [diloco] sections of the configuration).
#include <cstdint>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace parallama {

struct ParallelConfig {
  int dp = 1;  // data-parallel replicas (under a launcher, unless set: processes over tp · pp)
  int tp = 1;  // tensor-parallel ranks per replica (heads, FFN, vocabulary)
  int pp = 1;  // pipeline stages (dp · tp · pp = processes)
  std::vector<int> pp_layers;        // layers per (virtual) stage by hand; empty: balanced by cost
  std::string pp_schedule = "1f1b";  // gpipe | 1f1b | interleaved
  int pp_virtual = 1;                // model chunks per rank (interleaved)
  std::string pp_trace;              // write the pipeline timeline here (Chrome trace JSON)
  // Stage boundaries without pp_layers: "cost" (FLOP estimate), "measure" (a short timed pass
  // of the embedding, one layer and the head on this machine) or "even" (layers alone).
  std::string pp_balance = "cost";
  double bucket_mb = 4.0;  // gradient all-reduce bucket size
  // The embedding's gradient all-reduced as its non-zero rows alone (exact; fp32 --sync
  // allreduce without ZeRO, untied embeddings). See parallel/data_parallel.h.
  bool sparse_embedding_grad = true;
  // How gradient buckets travel over the data-parallel group: fp32, or bf16 (half the bytes,
  // summed in fp32; see parallel/data_parallel.h). --sync allreduce only.
  std::string reduce_dtype = "fp32";
  // ZeRO over the data-parallel group: 0 off; 1 optimizer state sharded (gradients
  // reduce-scattered, owned slices updated, parameters all-gathered); 2 also the gradients kept.
  int zero = 0;
  // Network stragglers: every link_probe_every steps (and at the third step of a run) each rank
  // times a message from a rank on another host (train/link_watch.h); 0 turns the probe off.
  int link_probe_every = 100;
  bool check_collectives = false;  // stamp every collective and compare across ranks (debug)
  double timeout_s = 120.0;        // a collective that takes longer is an error, not a hang
  // How replicas stay together: allreduce | ps | ps-async | local | diloco
  std::string sync = "allreduce";
  int ps_servers = 1;            // ps, ps-async: server ranks (the last ones)
  int ps_max_staleness = 2;      // ps-async: how many steps a worker may run ahead of the slowest
  int local_period = 8;          // local: steps between parameter averages
  int diloco_inner_steps = 16;   // diloco: inner AdamW steps between outer steps
  float diloco_outer_lr = 0.7f;  // diloco: outer Nesterov SGD learning rate
  float diloco_outer_momentum = 0.9f;
  // How the data-parallel ranks share each global batch: static (equal shares) or dynamic
  // (shares of micro-batches that follow each rank's measured speed, re-planned every
  // balance_every steps, at most balance_cap times the equal share). See parallel/balance.h.
  std::string balance = "static";
  int balance_every = 10;
  double balance_cap = 2.0;
  int servers() const { return sync == "ps" || sync == "ps-async" ? ps_servers : 0; }
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
