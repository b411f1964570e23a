// Pipeline schedules: every rank's action list runs in a simulator of the whole pipeline, where an
// action waits until the actions it depends on (on any rank) are done. Each action costs whole
// time units (forward 1, backward 1 or 2); transfers are free. The checks return a description
// of the first problem, so that the tests below can also show that they catch broken schedules.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "parallel/schedule.h"
#include "tensor/error.h"

namespace parallama {
namespace {

using Lists = std::vector<std::vector<PipeAction>>;  // one action list per pipeline rank

Lists all_ranks(PipeSchedule s, int stages, int micro, int virt) {
  Lists lists;
  for (int r = 0; r < stages; ++r) lists.push_back(pipeline_schedule(s, stages, r, micro, virt));
  return lists;
}

struct Sim {
  std::string problem;  // empty when every action ran
  long makespan = 0;    // time at which the last action ends
  std::vector<long> busy;
};

// Runs every rank's list in order. An action starts when its rank is free and its dependencies
// are done: F(i, k) after F(i, k − 1); B(i, k) after F(i, k) and B(i, k + 1), where k is the
// virtual stage. A rank never skips ahead, so a cycle of waits is a deadlock.
Sim simulate(const Lists& lists, int virt, long t_fwd, long t_bwd) {
  const int stages = static_cast<int>(lists.size()), last = virtual_stages(stages, virt) - 1;
  std::map<std::tuple<PipeOp, int, int>, long> done;  // (op, micro, virtual stage) -> end time
  std::vector<size_t> pos(stages, 0);
  std::vector<long> free_at(stages, 0);
  Sim sim;
  sim.busy.assign(stages, 0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < stages; ++r) {
      while (pos[r] < lists[r].size()) {
        const PipeAction& a = lists[r][pos[r]];
        const int k = virtual_stage(stages, r, a.chunk);
        std::vector<std::tuple<PipeOp, int, int>> deps;
        if (a.op == PipeOp::Forward && k > 0) deps.emplace_back(PipeOp::Forward, a.micro, k - 1);
        if (a.op == PipeOp::Backward) {
          deps.emplace_back(PipeOp::Forward, a.micro, k);
          if (k < last) deps.emplace_back(PipeOp::Backward, a.micro, k + 1);
        }
        long start = free_at[r];
        bool ready = true;
        for (const auto& d : deps) {
          const auto it = done.find(d);
          if (it == done.end()) ready = false;
          if (ready) start = std::max(start, it->second);
        }
        if (!ready) break;
        const long cost = a.op == PipeOp::Forward ? t_fwd : t_bwd;
        free_at[r] = start + cost;
        sim.busy[r] += cost;
        sim.makespan = std::max(sim.makespan, free_at[r]);
        done[{a.op, a.micro, k}] = free_at[r];
        ++pos[r];
        progress = true;
      }
    }
  }
  for (int r = 0; r < stages; ++r)
    if (pos[r] < lists[r].size())
      sim.problem += "deadlock: rank " + std::to_string(r) + " waits at " +
                     format_actions({lists[r][pos[r]]}) + "; ";
  return sim;
}

// (a) every (micro, chunk) of every rank has exactly one F and one B, and nothing else.
std::string check_complete(const Lists& lists, int micro, int virt) {
  for (size_t r = 0; r < lists.size(); ++r) {
    std::map<std::tuple<PipeOp, int, int>, int> count;
    for (const PipeAction& a : lists[r]) {
      if (a.micro < 0 || a.micro >= micro || a.chunk < 0 || a.chunk >= virt)
        return "rank " + std::to_string(r) + ": action out of range: " + format_actions({a});
      ++count[{a.op, a.micro, a.chunk}];
    }
    for (PipeOp op : {PipeOp::Forward, PipeOp::Backward})
      for (int i = 0; i < micro; ++i)
        for (int c = 0; c < virt; ++c)
          if (const int n = count[{op, i, c}]; n != 1)
            return "rank " + std::to_string(r) + ": " + format_actions({PipeAction{op, i, c}}) +
                   " runs " + std::to_string(n) + " times";
  }
  return "";
}

// The schedule is complete and runs to the end.
std::string check_runs(const Lists& lists, int micro, int virt) {
  if (std::string p = check_complete(lists, micro, virt); !p.empty()) return p;
  return simulate(lists, virt, 1, 2).problem;
}

const PipeSchedule kAll[] = {PipeSchedule::GPipe, PipeSchedule::OneFOneB,
                             PipeSchedule::Interleaved};

// Each valid (schedule, stages, micro, virt) for stages 1..4 and micro 1..16.
template <class F>
void for_each_case(F f) {
  for (PipeSchedule s : kAll)
    for (int p = 1; p <= 4; ++p)
      for (int m = 1; m <= 16; ++m)
        for (int v : {1, 2, 3}) {
          if ((s == PipeSchedule::Interleaved) != (v > 1)) continue;
          if (s == PipeSchedule::Interleaved && m % p != 0) continue;
          f(s, p, m, v);
        }
}

TEST(PipeSchedule, EveryChunkForwardAndBackwardOnceWithoutDeadlock) {
  int cases = 0;
  for_each_case([&](PipeSchedule s, int p, int m, int v) {
    const Lists lists = all_ranks(s, p, m, v);
    SCOPED_TRACE(std::string(schedule_name(s)) + " p=" + std::to_string(p) +
                 " m=" + std::to_string(m) + " v=" + std::to_string(v));
    EXPECT_EQ(check_complete(lists, m, v), "");
    for (long t_bwd : {1, 2}) EXPECT_EQ(simulate(lists, v, 1, t_bwd).problem, "");
    ++cases;
  });
  EXPECT_EQ(cases, 2 * 4 * 16 + 2 * (16 + 8 + 5 + 4));  // gpipe, 1f1b; interleaved v = 2, 3
}

// Activations held at once: GPipe holds all m on every rank; 1F1B holds min(stages − rank, m),
// so at most `stages` on rank 0; interleaved holds its warm-up plus one chunk.
TEST(PipeSchedule, PeakMicroBatchesInFlight) {
  for_each_case([&](PipeSchedule s, int p, int m, int v) {
    for (int r = 0; r < p; ++r) {
      SCOPED_TRACE(std::string(schedule_name(s)) + " p=" + std::to_string(p) + " m=" +
                   std::to_string(m) + " v=" + std::to_string(v) + " rank=" + std::to_string(r));
      const int peak = peak_in_flight(pipeline_schedule(s, p, r, m, v));
      if (s == PipeSchedule::GPipe) {
        EXPECT_EQ(peak, m);
      }
      if (s == PipeSchedule::OneFOneB) {
        EXPECT_EQ(peak, std::min(p - r, m));
        EXPECT_LE(peak, p);
      }
      if (s == PipeSchedule::Interleaved) {
        EXPECT_EQ(peak, std::min(2 * (p - r - 1) + (v - 1) * p + 1, m * v));
      }
    }
  });
  // The acceptance test of the issue, spelled out: 4 stages, 16 micro-batches, rank 0.
  EXPECT_EQ(peak_in_flight(pipeline_schedule(PipeSchedule::GPipe, 4, 0, 16, 1)), 16);
  EXPECT_EQ(peak_in_flight(pipeline_schedule(PipeSchedule::OneFOneB, 4, 0, 16, 1)), 4);
  EXPECT_EQ(peak_in_flight(pipeline_schedule(PipeSchedule::OneFOneB, 4, 3, 16, 1)), 1);
}

// With forward and backward of t_f and t_b units, GPipe and 1F1B both take exactly
// (m + p − 1)(t_f + t_b): each rank is busy m(t_f + t_b), so the idle share of the run, the
// bubble, is (p − 1)/(m + p − 1). Interleaving v chunks of 1/v of the layers each (one unit per
// chunk action) shrinks the bubble to (p − 1)/(v·m + p − 1).
TEST(PipeSchedule, SimulatedBubbleMatchesTheFormula) {
  for_each_case([&](PipeSchedule s, int p, int m, int v) {
    for (long t_bwd : {1, 2}) {
      SCOPED_TRACE(std::string(schedule_name(s)) + " p=" + std::to_string(p) + " m=" +
                   std::to_string(m) + " v=" + std::to_string(v) + " t_b=" + std::to_string(t_bwd));
      const Sim sim = simulate(all_ranks(s, p, m, v), v, 1, t_bwd);
      ASSERT_EQ(sim.problem, "");
      for (long b : sim.busy) EXPECT_EQ(b, long(m) * v * (1 + t_bwd));
      const double bubble = 1.0 - double(sim.busy[0]) / double(sim.makespan);
      if (s != PipeSchedule::Interleaved) {
        EXPECT_EQ(sim.makespan, (m + p - 1) * (1 + t_bwd));
        EXPECT_NEAR(bubble, double(p - 1) / (m + p - 1), 1e-12);
      } else if (t_bwd == 1) {
        EXPECT_EQ(sim.makespan, 2 * (long(v) * m + p - 1));
        EXPECT_NEAR(bubble, double(p - 1) / (v * m + p - 1), 1e-12);
      }
    }
  });
}

TEST(PipeSchedule, ListsAreTheDocumentedOrder) {
  auto f = [](PipeSchedule s, int p, int r, int m, int v) {
    return format_actions(pipeline_schedule(s, p, r, m, v));
  };
  EXPECT_EQ(f(PipeSchedule::GPipe, 2, 1, 3, 1), "F0.0 F1.0 F2.0 B0.0 B1.0 B2.0");
  EXPECT_EQ(f(PipeSchedule::OneFOneB, 4, 0, 6, 1),
            "F0.0 F1.0 F2.0 F3.0 B0.0 F4.0 B1.0 F5.0 B2.0 B3.0 B4.0 B5.0");
  EXPECT_EQ(f(PipeSchedule::OneFOneB, 4, 3, 3, 1), "F0.0 B0.0 F1.0 B1.0 F2.0 B2.0");
  EXPECT_EQ(f(PipeSchedule::OneFOneB, 4, 0, 2, 1), "F0.0 F1.0 B0.0 B1.0");  // m < p
  // Interleaved, p = 2, v = 2, m = 4. Rank 0: warm-up 2·1 + 1·2 = 4 forwards, micro-batches in
  // groups of p per chunk; backwards walk the chunks from the last.
  EXPECT_EQ(f(PipeSchedule::Interleaved, 2, 0, 4, 2),
            "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0");
  // Rank 1 holds the last virtual stage: warm-up 0 + 1·2 = 2 forwards.
  EXPECT_EQ(f(PipeSchedule::Interleaved, 2, 1, 4, 2),
            "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0");
  EXPECT_EQ(virtual_stage(4, 1, 2), 9);
  EXPECT_EQ(virtual_stages(4, 2), 8);
}

TEST(PipeSchedule, NamesAndActionTextRoundTrip) {
  for (PipeSchedule s : kAll) EXPECT_EQ(parse_schedule(schedule_name(s)), s);
  const auto lists = pipeline_schedule(PipeSchedule::Interleaved, 4, 1, 8, 3);
  EXPECT_EQ(parse_actions(format_actions(lists)), lists);
  EXPECT_TRUE(parse_actions("").empty());
  for (const char* bad : {"X0.0", "F1", "F1.", "F-1.0", "F1.0x", "B1,0"})
    EXPECT_THROW(parse_actions(std::string("F0.0 ") + bad), Error) << bad;
}

// One line that names the setting to change.
TEST(PipeSchedule, ImpossibleInputsAreOneLineErrors) {
  auto message = [](auto f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  using S = PipeSchedule;
  const std::pair<std::string, std::string> cases[] = {
      {message([] { parse_schedule("zero-bubble"); }), "gpipe, 1f1b, interleaved"},
      {message([] { pipeline_schedule(S::OneFOneB, 0, 0, 4, 1); }), "parallel.pp"},
      {message([] { pipeline_schedule(S::OneFOneB, 2, 2, 4, 1); }), "rank 2"},
      {message([] { pipeline_schedule(S::OneFOneB, 2, -1, 4, 1); }), "rank -1"},
      {message([] { pipeline_schedule(S::GPipe, 2, 0, 0, 1); }), "train.micro_batches"},
      {message([] { pipeline_schedule(S::Interleaved, 2, 0, 4, 0); }), "parallel.pp_virtual"},
      {message([] { pipeline_schedule(S::OneFOneB, 2, 0, 4, 2); }), "interleaved"},
      {message([] { pipeline_schedule(S::GPipe, 2, 0, 4, 2); }), "interleaved"},
      {message([] { pipeline_schedule(S::Interleaved, 2, 0, 4, 1); }), "1f1b"},
      {message([] { pipeline_schedule(S::Interleaved, 4, 0, 6, 2); }), "use 4 or 8"},
      {message([] { pipeline_schedule(S::Interleaved, 4, 0, 3, 2); }), "use 4"},
  };
  for (const auto& [msg, want] : cases) {
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// The checks above fail for broken schedules.
TEST(PipeSchedule, TheChecksCatchBrokenSchedules) {
  // A wait cycle across ranks: rank 1 runs micro-batch 1 first, which rank 0 only sends after
  // the backward of micro-batch 0, which needs rank 1's backward of micro-batch 0.
  EXPECT_NE(check_runs({parse_actions("F0.0 B0.0 F1.0 B1.0"), parse_actions("F1.0 F0.0 B0.0 B1.0")},
                       2, 1),
            "");
  // A backward before its own forward.
  EXPECT_NE(check_runs({parse_actions("B0.0 F0.0")}, 1, 1), "");
  // A missing, a repeated and an out-of-range action.
  EXPECT_NE(check_complete({parse_actions("F0.0 F1.0 B0.0")}, 2, 1), "");
  EXPECT_NE(check_complete({parse_actions("F0.0 F0.0 B0.0")}, 1, 1), "");
  EXPECT_NE(check_complete({parse_actions("F0.1 B0.1")}, 1, 1), "");
  // Valid but sequential: micro-batch by micro-batch through the whole pipeline. It completes,
  // but its bubble is larger than (p − 1)/(m + p − 1), and GPipe's peak exceeds 1F1B's bound.
  const Lists sequential = {parse_actions("F0.0 B0.0 F1.0 B1.0 F2.0 B2.0 F3.0 B3.0"),
                            parse_actions("F0.0 B0.0 F1.0 B1.0 F2.0 B2.0 F3.0 B3.0")};
  EXPECT_EQ(check_runs(sequential, 4, 1), "");
  EXPECT_GT(simulate(sequential, 1, 1, 1).makespan, (4 + 2 - 1) * 2);
  EXPECT_GT(peak_in_flight(pipeline_schedule(PipeSchedule::GPipe, 4, 0, 8, 1)), 4);
  // A 1F1B rank 0 that skips its warm-up deadlocks: its first backward waits for rank 1, which
  // is still in its own warm-up, waiting for a forward that rank 0 runs only after the backward.
  Lists eager = all_ranks(PipeSchedule::OneFOneB, 4, 8, 1);
  eager[0] = pipeline_schedule(PipeSchedule::OneFOneB, 4, 3, 8, 1);
  EXPECT_EQ(check_complete(eager, 8, 1), "");
  EXPECT_NE(simulate(eager, 1, 1, 1).problem.find("deadlock: rank 0 waits at B0.0"),
            std::string::npos);
}

}  // namespace
}  // namespace parallama
