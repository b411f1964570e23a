#pragma once
// Pipeline execution: one loop runs this rank's list of actions (parallel/schedule.h) over its
// model chunks. Activations and their gradients move between stages as non-blocking
// Group::isend / irecv: receives are posted ahead of the action that needs them and sends go
// out as soon as a chunk is done, so transfers overlap computation. Every message carries a
// stamp (micro-batch, virtual stage, direction, size) that the receiver checks, so a message
// that arrives where another was expected is an error naming both, not a silent mix-up; every
// wait has the group's deadline, so a dead stage ends the job instead of a hang.
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "comm/group.h"
#include "model/llama.h"
#include "parallel/schedule.h"

namespace parallama {

// One interval of a rank's timeline, in seconds since the pipeline was made.
struct PipeEvent {
  int kind;          // index into kPipeEventKinds
  int micro, chunk;  // of the action (-1 for idle and send waits)
  double start, end;
  std::string name() const;  // e.g. "F3.0": forward of micro-batch 3 through chunk 0
};
inline constexpr const char* kPipeEventKinds[] = {"forward", "backward", "send", "recv", "idle"};

struct PipeStepStats {
  double step_s = 0;       // wall time of the step on this rank
  double busy_s = 0;       // in forward and backward computation
  double recv_s = 0;       // waiting for activations or gradients
  double send_s = 0;       // waiting for sends to complete at the end of the step
  int peak_in_flight = 0;  // micro-batch chunks whose activations were held at once
  size_t peak_activation_bytes = 0;
};

class Pipeline {
 public:
  // model: this rank's stage (virt chunks); pp: the pipeline group, rank = stage.
  Pipeline(Llama& model, comm::Group pp, PipeSchedule schedule, int virt, int micro);

  // One optimizer step's forwards and backwards over the micro-batches: tokens, targets
  // (micro, B, T). Weight gradients accumulate into grads, scaled by grad_scale; the last
  // backward of each chunk reports finished gradients to on_final. Returns the sum of the
  // micro-batches' losses (held by the last stage, summed over the stages so every stage has it).
  double step(const ParamBuffer& params, ParamBuffer& grads, const int32_t* tokens,
              const int32_t* targets, float grad_scale,
              const std::function<void(int64_t)>& on_final = {});

  // Forward only, for evaluation: one batch (B, T) through every stage. Returns (loss sum,
  // valid targets) of the batch on every stage.
  std::pair<double, int64_t> forward_only(const ParamBuffer& params, const int32_t* tokens,
                                          const int32_t* targets);

  const PipeStepStats& last_step() const { return stats_; }
  // Timeline events of every step so far (kept while tracing is on).
  void set_tracing(bool on) { tracing_ = on; }
  const std::vector<PipeEvent>& events() const { return events_; }

 private:
  struct Buf {
    std::vector<float> data;  // (N, C) payload, then the stamp
    comm::Request req;
    bool busy = false;
  };
  struct Pending {  // a receive posted ahead of the action that needs it
    int action;
    Buf* buf;
  };
  int tag(int vstage, int micro, bool grad) const;
  Buf& free_buf(std::deque<Buf>& pool);
  void stamp(Buf& b, int vstage, int micro, bool grad) const;
  void check_stamp(const float* msg, int vstage, int micro, bool grad) const;
  // Posts receives in action order: through needs_recv_[upto], and up to kPostAhead pending.
  void post_receives(int upto);
  const float* wait_receive(int action);
  void send(const float* data, int to_vstage, int micro, bool grad);
  void event(int kind, int micro, int chunk, double t0, double t1);

  Llama& model_;
  comm::Group pp_;
  int P_, rank_, virt_, micro_;
  int64_t n_;  // floats per message payload: N · C
  std::vector<PipeAction> actions_;
  std::vector<int> needs_recv_;     // indices of actions that wait for a message, in order
  std::vector<int> recv_pos_;       // per action: its index in needs_recv_, or -1
  std::vector<int> last_backward_;  // per chunk: the action that completes its gradients
  size_t next_recv_ = 0;            // the next of those to post
  std::vector<Pending> pending_;
  std::deque<Buf> recv_pool_, send_pool_;  // stable addresses while requests are in flight
  PipeStepStats stats_;
  bool tracing_ = false;
  double t_origin_;
  std::vector<PipeEvent> events_;
};

}  // namespace parallama
