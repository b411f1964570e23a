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
#include "parallel/config.h"
#include "parallel/mesh.h"

namespace parallama {

struct TrainConfig {
  int batch_size = 8;          // sequences per micro-batch (B)
  int seq_len = 256;           // tokens per sequence (T)
  int micro_batches = 1;       // gradient accumulation: micro-batches per optimizer step
  int64_t steps = 200;         // optimizer steps
  uint64_t seed = 1337;        // parameter init and data order
  int threads = 0;             // OpenMP threads; 0 = all cores (or OMP_NUM_THREADS)
  float grad_clip = 1.0f;      // global-norm clipping; 0 = off
  int log_every = 10;          // steps between log lines when not on a terminal
  int val_every = 50;          // steps between validation losses; 0 = only at the end
  int val_batches = 8;         // micro-batches of validation data per measurement
  int ckpt_every = 100;        // steps between checkpoints; 0 = only at the end
  bool ckpt_async = false;     // write checkpoints on a thread (train/trainer_run.h)
  bool ckpt_per_rank = false;  // every rank writes its own pieces (io/pieces.h)
  // Activation recompute: none, attention (drop the attention probabilities, recompute them in
  // backward) or full (keep each layer's input, redo its forward in backward); see model/config.h.
  Recompute recompute = Recompute::none;
  // Matrix-multiply precision: fp32, or bf16 / fp16 mixed precision with fp32 master weights
  // (see model/config.h). fp16 scales the loss dynamically (train/loss_scale.h): it starts at
  // loss_scale, doubles after loss_scale_window clean steps, halves on an overflow.
  Precision precision = Precision::fp32;
  double loss_scale = 65536.0;
  int loss_scale_window = 1000;
  std::string out_dir = "runs/default";
};

struct DataConfig {
  std::string dir;  // made by `parallama prepare`: train.bin, val.bin, tokenizer.model
};

struct BenchConfig {
  int steps = 10;  // timed steps
  int warmup = 2;  // untimed steps first
};

// What a command uses of the configuration. Every key is always read strictly (name and type);
// only the sections a command uses are checked for sense: `info` has no training run; none checks
// names and types only.
enum class ConfigUse { none, model, run };

struct RunConfig {
  LlamaConfig model;
  TrainConfig train;
  OptimConfig optim;
  DataConfig data;
  ParallelConfig parallel;
  BenchConfig bench;
  void validate(ConfigUse use = ConfigUse::run) const;
  // Throws Error unless parallel.dp workers (plus any parameter servers) were started.
  void check_processes(int processes) const;
};

// One setting of the run configuration, as the table of settings lists it.
struct SettingInfo {
  std::string key;            // section.key
  std::string type;           // integer, number, true or false, text, list of integers, one of
  std::string default_value;  // as JSON (and TOML) writes it
  std::string meaning;        // one line
  std::vector<std::string> choices;  // the names a "one of" setting takes
};
// Every setting, in the order of the configuration's sections, with its default (those of
// [model] are the default preset's).
std::vector<SettingInfo> settings_table();

// The mesh and pipeline plan of a run's [parallel] settings.
MeshShape mesh_shape(const RunConfig& c);

using Overrides = std::vector<std::pair<std::string, std::string>>;  // ("optim.lr", "3e-4")

// Reads `path` (may be empty: defaults and overrides only). Throws Error with one line naming the
// file and key for an unknown key or a value of the wrong type anywhere, and for a value that
// makes no sense in the sections that `use` needs.
// A directory, an unreadable or an empty file is an error. A string setting given on the command
// line is taken as typed, whatever TOML type it looks like (--train.out_dir 2024).
// processes > 0 (a command running under a launcher): parallel.dp, where neither the file nor an
// override sets it, is the number of processes over tp × pp, less the parameter servers; an error
// when they do not divide. A dp that is set stays, and RunConfig::check_processes judges it.
RunConfig load_run_config(const std::string& path, const Overrides& overrides,
                          ConfigUse use = ConfigUse::run, int processes = 0);
// The same from TOML text (source names it in errors).
RunConfig parse_run_config_text(const std::string& text, const std::string& source,
                                const Overrides& overrides = {}, ConfigUse use = ConfigUse::run);

// Every key with its value, as nested JSON ({"model": {...}, ...}), for trainer.json; and back,
// exactly: each value keeps its JSON type (a string "2024" stays a string).
nlohmann::json config_to_json(const RunConfig& c);
RunConfig config_from_json(const nlohmann::json& j, const std::string& source,
                           ConfigUse use = ConfigUse::run);

// The config recorded in a checkpoint's trainer.json (source: its path, for errors).
RunConfig checkpoint_config(const nlohmann::json& trainer_json, const std::string& source);

// Splits leftover command-line words "--a.b v" / "--a.b=v" into overrides; throws Error otherwise.
Overrides parse_overrides(const std::vector<std::string>& args);

}  // namespace parallama
