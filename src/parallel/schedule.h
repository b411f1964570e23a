#pragma once
// Pipeline schedules as plain lists of actions. Each pipeline rank runs its own list in order,
// one action at a time: the forward or the backward of one micro-batch through one of its model
// chunks. The lists are the whole schedule, so they can be printed, traced and tested without a
// model (tests/unit/test_schedule.cpp runs every rank's list in a simulator).
//
// Chunk layout: with `virt` chunks per rank the model is cut into stages · virt virtual stages;
// virtual stage k runs on rank k % stages as that rank's chunk k / stages (Megatron's
// interleaving: rank 0 holds virtual stages 0, stages, 2·stages, ...).
//
// Dependencies across ranks, which the executing loop meets with point-to-point transfers:
//   F(micro, k) needs the activations of F(micro, k − 1), computed on rank (k − 1) % stages;
//   B(micro, k) needs the input gradient of B(micro, k + 1) and this rank's own F(micro, k);
//   the last virtual stage's B(micro) needs only its own F(micro) (it holds the loss).
#include <string>
#include <vector>

#include "tensor/names.h"

namespace parallama {

enum class PipeOp { Forward, Backward };

struct PipeAction {
  PipeOp op;
  int micro;  // micro-batch 0..m-1
  int chunk;  // this rank's model chunk 0..v-1
  bool operator==(const PipeAction&) const = default;
};

enum class PipeSchedule { GPipe, OneFOneB, Interleaved };
constexpr std::array<Named<PipeSchedule>, 3> names(PipeSchedule) {
  return {{{PipeSchedule::GPipe, "gpipe"},
           {PipeSchedule::OneFOneB, "1f1b"},
           {PipeSchedule::Interleaved, "interleaved"}}};
}

// "gpipe" | "1f1b" | "interleaved"; anything else is an Error listing the choices.
PipeSchedule parse_schedule(const std::string& name);
const char* schedule_name(PipeSchedule s);

// The actions of pipeline rank `rank` of `stages` ranks, for `micro` micro-batches and `virt`
// model chunks per rank (virt = 1 unless Interleaved, which needs virt ≥ 2 and micro a multiple
// of stages). Impossible inputs are an Error in one line saying what to change.
//   GPipe: every forward (micro 0..m-1), then every backward in the same order.
//   1F1B: min(stages − rank − 1, m) warm-up forwards, then one forward and one backward in
//     turn, then the remaining backwards. At most stages − rank micro-batches are in flight.
//   Interleaved (Megatron's interleaved 1F1B): m · v virtual micro-batches; forward number k
//     runs chunk (k mod (stages·v)) / stages, backward number k the chunk v − 1 − that, both on
//     micro-batch (k / (stages·v))·stages + k mod stages; min((stages − rank − 1)·2 +
//     (v − 1)·stages, m·v) warm-up forwards, then 1F1B, then the remaining backwards.
std::vector<PipeAction> pipeline_schedule(PipeSchedule s, int stages, int rank, int micro,
                                          int virt);

// The virtual stage (global chunk index) of chunk `chunk` on pipeline rank `rank`.
inline int virtual_stage(int stages, int rank, int chunk) {
  return chunk * stages + rank;
}

// The number of virtual stages; the last one holds the head and the loss.
inline int virtual_stages(int stages, int virt) {
  return stages * virt;
}

// "F0.0 F1.0 B0.0 ..." (op, micro-batch, '.', chunk), separated by single spaces.
std::string format_actions(const std::vector<PipeAction>& actions);
// The inverse of format_actions (for tests and hand-written schedules); Error on bad text.
std::vector<PipeAction> parse_actions(const std::string& text);

// The largest number of micro-batch chunks whose forward has run but whose backward has not, at
// any point of the list: how many micro-batches' activations the rank must hold at once.
int peak_in_flight(const std::vector<PipeAction>& actions);

}  // namespace parallama
