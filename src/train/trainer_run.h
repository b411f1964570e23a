#pragma once
// The training run behind train(): one object per run, in named stages.
//   set_up      roles, mesh, the data and its tokenizer, memory: everything a user could get
//               wrong, checked before the model is built
//   claim       the run directory: locked, the checkpoint to resume (or a fresh start that
//               replaces nobody's checkpoints), --init checked against the data
//   build       the model, optimizer and synchronizer; the checkpoint or --init weights loaded
//   step        one optimizer step: micro-batches, forward and backward, the update, its
//               metrics line
//   evaluate    the validation loss, into the step's metrics
//   checkpoint  the state, gathered and written
//   report      the run report; at the end, the memory, traffic and straggler summaries
// A parameter server (--sync ps) runs `serve` instead of the step loop.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "data/loader.h"
#include "data/shard.h"
#include "parallel/balance.h"
#include "parallel/mesh.h"
#include "parallel/sync.h"
#include "train/link_watch.h"
#include "train/metrics.h"
#include "train/preempt.h"
#include "train/run_dir.h"
#include "train/step.h"
#include "train/straggler.h"
#include "train/traffic.h"
#include "train/trainer.h"

namespace parallama {

class Trainer {
 public:
  Trainer(const RunConfig& cfg, const TrainOptions& opt, comm::Group world);
  ~Trainer();  // waits for a checkpoint still being written
  int run();   // the exit code: 0, or kExitPreempted after a signal

 private:
  void set_up();
  bool claim();  // false: the checkpoint to resume is already at the last step (said so)
  void build();
  int serve();
  void announce();
  int64_t step(int64_t at);  // the signal that stops the run after this step, or 0
  void evaluate(int64_t at, nlohmann::json& metrics);
  void checkpoint(int64_t at, double loss);
  // train.ckpt_async: waits until the checkpoint being written on the saving thread is complete
  // (and `latest` names it); throws its failure.
  void wait_for_checkpoint();
  void snapshot_state();  // train.ckpt_async, the writer holding every tensor: a copy in memory
  void report();
  void finish();
  void say(const std::string& line);
  bool is_checkpoint(int64_t at) const;
  int64_t global_batch() const;  // sequences per step over all data-parallel ranks

  // What the run reads: the shards and the tokenizer they were made with.
  struct Data {
    TokenShard train, val;
    std::string tokenizer;
  };
  // Where it starts: the run directory's lock, the checkpoint resumed or the weights of --init.
  struct Start {
    std::optional<RunDirLock> lock;
    std::string resume, init;
    nlohmann::json resume_json;
  };
  // Where it is: steps and who does what.
  struct Run {
    int threads = 0;
    int64_t step = 0, first_step = 1, last = 0;  // step: the last one done
    double loss = 0.0;                           // of the last step done
    double residual_norm = -1;                   // error feedback's, at the last step reporting it
    bool writes = false, async = false, preemptible = false;
    std::vector<double> step_s;  // each step's seconds, for the prediction's check
  };
  // Checkpoints: how long training waited for them; with train.ckpt_async, the thread writing
  // the last one (the writer's) and how it failed.
  struct Saving {
    int count = 0;
    double wait_s = 0, max_wait_s = 0;
    std::thread thread;
    std::exception_ptr error;
    std::string stage_root;  // where an asynchronous checkpoint is copied first (gathered ones)
    std::optional<ParamBuffer> params;  // the copy of a writer that holds every tensor
    std::optional<Optimizer> optim;
  };
  // What it watches: bytes per step and in total, stragglers, links.
  struct Watch {
    int64_t sent0 = 0, received0 = 0;
    AxisBytes axes_total;
    StragglerWatch stragglers;
    std::optional<LinkWatch> links;
  };

  const RunConfig& cfg_;
  const TrainOptions& opt_;
  comm::Group world_, alone_;
  SyncConfig sc_;
  Roles roles_;
  MeshShape shape_;
  std::optional<Mesh> mesh_;
  Data data_;
  std::optional<DataLoader> loader_;
  Start start_;
  Run run_;
  std::optional<TrainState> st_;
  std::unique_ptr<Synchronizer> sync_;
  std::optional<Progress> progress_;
  std::optional<PreemptionGuard> guard_;
  std::optional<Balancer> balancer_;
  std::vector<int32_t> tokens_, targets_;  // the micro-batches of a step
  Watch watch_;
  Saving saving_;
};

}  // namespace parallama
