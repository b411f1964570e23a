#include "parallel/schedule.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>
#include <utility>

#include "tensor/error.h"

namespace parallama {

namespace {

std::string str(int v) {
  return std::to_string(v);
}

void check_inputs(PipeSchedule s, int stages, int rank, int micro, int virt) {
  if (stages < 1)
    throw Error("a pipeline needs at least 1 stage (parallel.pp is " + str(stages) + ")");
  if (rank < 0 || rank >= stages)
    throw Error("pipeline rank " + str(rank) + " is outside 0.." + str(stages - 1) +
                " for parallel.pp = " + str(stages));
  if (micro < 1)
    throw Error("a pipeline step needs at least 1 micro-batch (train.micro_batches is " +
                str(micro) + ")");
  if (virt < 1)
    throw Error("parallel.pp_virtual must be at least 1 model chunk per stage (got " + str(virt) +
                ")");
  if (s != PipeSchedule::Interleaved && virt != 1)
    throw Error("parallel.pp_virtual = " + str(virt) +
                " needs parallel.pp_schedule = interleaved (" + schedule_name(s) +
                " runs one model chunk per stage: set parallel.pp_virtual = 1)");
  if (s == PipeSchedule::Interleaved && virt < 2)
    throw Error(
        "the interleaved schedule needs parallel.pp_virtual of 2 or more model chunks per stage "
        "(with one chunk, use parallel.pp_schedule = 1f1b)");
  if (s == PipeSchedule::Interleaved && micro % stages != 0) {
    const int below = micro / stages * stages, above = below + stages;
    throw Error("the interleaved schedule needs train.micro_batches (" + str(micro) +
                ") to be a multiple of parallel.pp (" + str(stages) + "): use " +
                (below > 0 ? str(below) + " or " : "") + str(above));
  }
}

std::vector<PipeAction> gpipe(int micro) {
  std::vector<PipeAction> out;
  for (int i = 0; i < micro; ++i) out.push_back({PipeOp::Forward, i, 0});
  for (int i = 0; i < micro; ++i) out.push_back({PipeOp::Backward, i, 0});
  return out;
}

// Megatron's non-interleaved 1F1B: rank r runs stages − r − 1 forwards ahead, so that the last
// stage can start its first backward as soon as its first forward is done.
std::vector<PipeAction> one_f_one_b(int stages, int rank, int micro) {
  const int warmup = std::min(stages - rank - 1, micro);
  std::vector<PipeAction> out;
  int f = 0, b = 0;
  for (; f < warmup; ++f) out.push_back({PipeOp::Forward, f, 0});
  while (f < micro) {
    out.push_back({PipeOp::Forward, f++, 0});
    out.push_back({PipeOp::Backward, b++, 0});
  }
  while (b < micro) out.push_back({PipeOp::Backward, b++, 0});
  return out;
}

// Megatron's interleaved 1F1B. The rank walks its m · v virtual micro-batches in groups of
// stages · v: a group runs `stages` micro-batches through chunk 0, then the same through chunk
// 1, and so on (backwards through the chunks in reverse).
PipeAction interleaved_action(PipeOp op, int k, int stages, int virt) {
  const int group = stages * virt, in_group = k % group;
  const int micro = (k / group) * stages + k % stages;
  const int chunk = in_group / stages;
  return {op, micro, op == PipeOp::Forward ? chunk : virt - 1 - chunk};
}

std::vector<PipeAction> interleaved(int stages, int rank, int micro, int virt) {
  const int total = micro * virt;
  const int warmup = std::min((stages - rank - 1) * 2 + (virt - 1) * stages, total);
  std::vector<PipeAction> out;
  int f = 0, b = 0;
  for (; f < warmup; ++f) out.push_back(interleaved_action(PipeOp::Forward, f, stages, virt));
  while (f < total) {
    out.push_back(interleaved_action(PipeOp::Forward, f++, stages, virt));
    out.push_back(interleaved_action(PipeOp::Backward, b++, stages, virt));
  }
  while (b < total) out.push_back(interleaved_action(PipeOp::Backward, b++, stages, virt));
  return out;
}

}  // namespace

PipeSchedule parse_schedule(const std::string& name) {
  if (const auto s = value_named<PipeSchedule>(name)) return *s;
  throw Error("unknown pipeline schedule '" + name +
              "' (parallel.pp_schedule is one of gpipe, 1f1b, interleaved)");
}

const char* schedule_name(PipeSchedule s) {
  return name_of(s);
}

std::vector<PipeAction> pipeline_schedule(PipeSchedule s, int stages, int rank, int micro,
                                          int virt) {
  check_inputs(s, stages, rank, micro, virt);
  switch (s) {
    case PipeSchedule::GPipe:
      return gpipe(micro);
    case PipeSchedule::OneFOneB:
      return one_f_one_b(stages, rank, micro);
    case PipeSchedule::Interleaved:
      return interleaved(stages, rank, micro, virt);
  }
  return {};
}

std::string format_actions(const std::vector<PipeAction>& actions) {
  std::string out;
  for (const PipeAction& a : actions) {
    if (!out.empty()) out += ' ';
    out += a.op == PipeOp::Forward ? 'F' : 'B';
    out += str(a.micro) + "." + str(a.chunk);
  }
  return out;
}

std::vector<PipeAction> parse_actions(const std::string& text) {
  std::vector<PipeAction> out;
  std::istringstream in(text);
  for (std::string word; in >> word;) {
    PipeAction a{PipeOp::Forward, -1, -1};
    char op = 0, dot = 0, extra = 0;
    const bool ok =
        std::sscanf(word.c_str(), "%c%d%c%d%c", &op, &a.micro, &dot, &a.chunk, &extra) == 4 &&
        (op == 'F' || op == 'B') && dot == '.' && a.micro >= 0 && a.chunk >= 0;
    if (!ok)
      throw Error("pipeline action '" + word +
                  "' is not F or B, a micro-batch, '.' and a chunk (e.g. F3.0)");
    a.op = op == 'F' ? PipeOp::Forward : PipeOp::Backward;
    out.push_back(a);
  }
  return out;
}

int peak_in_flight(const std::vector<PipeAction>& actions) {
  std::set<std::pair<int, int>> live;
  size_t peak = 0;
  for (const PipeAction& a : actions) {
    if (a.op == PipeOp::Forward)
      live.insert({a.micro, a.chunk});
    else
      live.erase({a.micro, a.chunk});
    peak = std::max(peak, live.size());
  }
  return static_cast<int>(peak);
}

}  // namespace parallama
