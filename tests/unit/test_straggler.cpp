// Stragglers are named from every worker's compute time per step: once, after several slow steps
// in a row, against the median of the workers that do the same work (their pipeline stage).
#include <gtest/gtest.h>

#include "train/straggler.h"

namespace parallama {

namespace {

std::vector<WorkerTime> three(double slow) {  // ranks 0 and 1 at 1 s, rank 2 at `slow`
  return {{0, 0, 1.0}, {1, 0, 1.02}, {2, 0, slow}};
}

}  // namespace

TEST(Stragglers, NamedOnceAfterFiveSlowStepsInARow) {
  StragglerWatch w(0.2, 5, 0);
  int64_t step = 0;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(w.observe(++step, three(1.5)).empty());
  const std::vector<std::string> lines = w.observe(++step, three(1.5));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("rank 2 is a straggler"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("to step 5"), std::string::npos) << lines[0];
  for (int i = 0; i < 15; ++i) EXPECT_TRUE(w.observe(++step, three(1.5)).empty());
  const nlohmann::json r = w.report();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["rank"], 2);
  EXPECT_EQ(r[0]["named_at_step"], 5);
  EXPECT_EQ(r[0]["slow_steps"], 20);
  EXPECT_NEAR(r[0]["compute_ratio"].get<double>(), 1.5 / 1.02, 1e-9);  // the median is rank 1's
}

TEST(Stragglers, SpikesNameNobodyASustainedSlowdownDoes) {
  StragglerWatch w(0.2, 5, 0);
  int64_t step = 0;
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(w.observe(++step, three(1.0)).empty());
  // One step at twice the pace in every four: its average never stays high.
  for (int i = 0; i < 40; ++i) EXPECT_TRUE(w.observe(++step, three(i % 4 ? 1.0 : 2.0)).empty());
  EXPECT_TRUE(w.report().empty());
  int named = 0;
  for (int i = 0; i < 10; ++i) named += static_cast<int>(w.observe(++step, three(1.5)).size());
  EXPECT_EQ(named, 1);
  ASSERT_EQ(w.report().size(), 1u);
  EXPECT_EQ(w.report()[0]["rank"], 2);
}

TEST(Stragglers, OnlyPeersOfOneStageAreCompared) {
  StragglerWatch w(0.2, 5, 0);
  // Stage 1 (the head) does twice stage 0's work on every rank: nobody is slow.
  const std::vector<WorkerTime> pipeline = {{0, 0, 1.0}, {1, 1, 2.0}, {2, 0, 1.0}, {3, 1, 2.1}};
  for (int64_t s = 1; s <= 20; ++s) EXPECT_TRUE(w.observe(s, pipeline).empty());
  // One worker alone in its stage has no peers to be slower than.
  for (int64_t s = 21; s <= 40; ++s) EXPECT_TRUE(w.observe(s, {{0, 0, 1.0}, {1, 1, 9.0}}).empty());
  EXPECT_TRUE(w.report().empty());
  // Two workers: the median is their mean; 1.6 against 1.0 is 23% over 1.3.
  for (int64_t s = 41; s <= 45; ++s) {
    const auto lines = w.observe(s, {{0, 0, 1.0}, {1, 0, 1.6}});
    EXPECT_EQ(lines.size(), s == 45 ? 1u : 0u);
  }
}

TEST(Stragglers, TheFirstStepsAreNotJudged) {
  StragglerWatch w;  // 10 steps of warm-up
  int named = 0;
  for (int64_t s = 1; s <= 10; ++s) named += static_cast<int>(w.observe(s, three(3.0)).size());
  EXPECT_EQ(named, 0);
  for (int64_t s = 11; s <= 14; ++s) EXPECT_TRUE(w.observe(s, three(3.0)).empty());
  EXPECT_EQ(w.observe(15, three(3.0)).size(), 1u);
}

TEST(Stragglers, TimesComeFromTheMetricsLine) {
  const nlohmann::json j = {
      {"bytes_per_rank",
       {{{"rank", 0}, {"role", "worker"}, {"compute_s", 0.5}, {"wait_s", 0.1}, {"stage", 0}},
        {{"rank", 1}, {"role", "worker"}, {"compute_s", 0.7}, {"wait_s", 0.0}, {"stage", 1}},
        {{"rank", 2}, {"role", "server"}, {"sent", 1.0}}}}};
  const std::vector<WorkerTime> t = worker_times(j);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[1].rank, 1);
  EXPECT_EQ(t[1].stage, 1);
  EXPECT_EQ(t[1].compute_s, 0.7);
  EXPECT_TRUE(worker_times(nlohmann::json::object()).empty());
}

}  // namespace parallama
