#pragma once
// Messages between parameter-server workers and servers (point to point on the world group).
#include <cstdint>

#include "parallel/sync.h"

namespace parallama::ps {

enum Tag : int {
  kPushHead = 101,
  kPushData = 102,
  kPullHead = 103,
  kPullData = 104,
  kStateHead = 105,
  kStateData = 106
};

struct PushHead {   // worker -> server, followed by the gradient slice
  int64_t step;     // the worker's step (1-based)
  int64_t version;  // the server's parameter version the gradient was computed on
  int64_t last;     // ps: 1 when the workers agreed to stop after this step (a signal)
};

struct PullHead {  // server -> worker, followed by the parameter slice
  int64_t version;
  double grad_norm;      // ps: the global gradient norm (before clipping)
  double staleness_max;  // ps-async: versions applied between a worker's pull and its push
  double staleness_mean;
  double lead_max;        // ps-async: most steps any worker was let run ahead of the slowest
  double sent, received;  // the server's bytes so far, for the workers' traffic records
  int64_t signal;         // ps: a stop signal the server received (0: none), for the workers
};

// Rank 0 receives every server's slice of the optimizer state (and its step count) before
// writing a checkpoint; servers send it at the same steps.
void receive_state(Roles& roles, Replica& st);
void send_state(Roles& roles, Replica& st, int64_t lo, int64_t hi);

}  // namespace parallama::ps
