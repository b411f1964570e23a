#pragma once
// The run configuration: a TOML file, then command-line overrides (--section.key value), read
// strictly: an unknown key or a value of the wrong type is an error before any work is done.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "optim/optimizer.h"

namespace parallama {

struct TrainConfig {
  int batch_size = 8;      // sequences per micro-batch (B)
  int seq_len = 256;       // tokens per sequence (T)
  int micro_batches = 1;   // gradient accumulation: micro-batches per optimizer step
  int64_t steps = 200;     // optimizer steps
  uint64_t seed = 1337;    // parameter init and data order
  int threads = 0;         // OpenMP threads; 0 = all cores (or OMP_NUM_THREADS)
  float grad_clip = 1.0f;  // global-norm clipping; 0 = off
  int log_every = 10;      // steps between log lines when not on a terminal
  int val_every = 50;      // steps between validation losses; 0 = only at the end
  int val_batches = 8;     // micro-batches of validation data per measurement
  int ckpt_every = 100;    // steps between checkpoints; 0 = only at the end
  std::string out_dir = "runs/default";
};

struct DataConfig {
  std::string dir;  // made by `parallama prepare`: train.bin, val.bin, tokenizer.model
};

struct ParallelConfig {
  int dp = 1;                      // data-parallel ranks: must equal the number of processes
  double bucket_mb = 4.0;          // gradient all-reduce bucket size
  bool check_collectives = false;  // stamp every collective and compare across ranks (debug)
  double timeout_s = 120.0;        // a collective that takes longer is an error, not a hang
  // How replicas stay together: allreduce | ps | ps-async | local | diloco
  std::string sync = "allreduce";
  int ps_servers = 1;        // ps, ps-async: server ranks (the last ones)
  int ps_max_staleness = 2;  // ps-async: how many steps a worker may run ahead of the slowest
  int ps_slow_rank = -1;     // ps-async test aid: this worker sleeps ps_slow_ms every step
  int ps_slow_ms = 0;
  int local_period = 8;          // local: steps between parameter averages
  int diloco_inner_steps = 16;   // diloco: inner AdamW steps between outer steps
  float diloco_outer_lr = 0.7f;  // diloco: outer Nesterov SGD learning rate
  float diloco_outer_momentum = 0.9f;
  int servers() const { return sync == "ps" || sync == "ps-async" ? ps_servers : 0; }
};

struct BenchConfig {
  int steps = 10;  // timed steps
  int warmup = 2;  // untimed steps first
};

struct RunConfig {
  LlamaConfig model;
  TrainConfig train;
  OptimConfig optim;
  DataConfig data;
  ParallelConfig parallel;
  BenchConfig bench;
  void validate() const;
  // Throws Error unless parallel.dp workers (plus any parameter servers) were started.
  void check_processes(int processes) const;
};

using Overrides = std::vector<std::pair<std::string, std::string>>;  // ("optim.lr", "3e-4")

// Reads `path` (may be empty: defaults and overrides only). Throws Error with one line naming the
// file and key for anything wrong.
RunConfig load_run_config(const std::string& path, const Overrides& overrides);

// Every key with its value, as nested JSON ({"model": {...}, ...}), for trainer.json; and back.
nlohmann::json config_to_json(const RunConfig& c);
RunConfig config_from_json(const nlohmann::json& j, const std::string& source);

// Splits leftover command-line words "--a.b v" / "--a.b=v" into overrides; throws Error otherwise.
Overrides parse_overrides(const std::vector<std::string>& args);

}  // namespace parallama
