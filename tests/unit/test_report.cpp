// The run report's charts (train/report.h) and the data-parallel replicas taken from the number
// of processes (train/run_config.h).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "train/report.h"
#include "train/run_config.h"

namespace parallama {

using nlohmann::json;
using test::error_of;

namespace {

const json* chart(const json& charts, const std::string& id) {
  for (const json& c : charts)
    if (c["id"] == id) return &c;
  return nullptr;
}

// Steps of a two-rank run: loss, lr, norm, throughput, dp bytes; validation every 5th step.
std::vector<json> steps(int n, double elapsed_step = 0.1) {
  std::vector<json> out;
  for (int s = 1; s <= n; ++s) {
    json j = {{"step", s},
              {"loss", 5.0 - 0.01 * s},
              {"lr", 1e-3},
              {"grad_norm", 1.0},
              {"tokens_per_s", 1000.0},
              {"elapsed", elapsed_step * s},
              {"bytes_dp", 2e6},
              {"bytes_tp", 0.0},
              {"bytes_per_rank",
               {{{"rank", 0}, {"compute_s", 0.1}, {"wait_s", 0.0}},
                {{"rank", 1}, {"compute_s", 0.05}, {"wait_s", 0.05}}}}};
    if (s % 5 == 0) j["val_loss"] = 4.0;
    out.push_back(j);
  }
  return out;
}

}  // namespace

TEST(Report, ChartsAreThoseTheRunRecorded) {
  const json summary = {
      {"memory",
       {{{"rank", 0}, {"parameters", 4e6}, {"gradients", 4e6}, {"optimizer_state", 8e6}}}}};
  const json charts = report_charts(steps(20), summary, 6e6, 0);
  for (const char* id : {"loss", "loss_time", "lr", "grad_norm", "tokens_per_s", "flops", "traffic",
                         "memory", "ranks"})
    EXPECT_NE(chart(charts, id), nullptr) << id;
  // Nothing that the run did not record: no pipeline, no fp16, no balancing, no link probes.
  for (const char* id : {"bubble", "loss_scale", "shares", "links", "comm"})
    EXPECT_EQ(chart(charts, id), nullptr) << id;
  // Validation: its own points, at steps 5, 10, 15, 20.
  const json& val = (*chart(charts, "loss"))["series"][1];
  EXPECT_EQ(val["x"], json({5.0, 10.0, 15.0, 20.0}));
  // Only the axes that carried bytes; MB per step.
  const json& traffic = (*chart(charts, "traffic"))["series"];
  ASSERT_EQ(traffic.size(), 1u);
  EXPECT_EQ(traffic[0]["name"], "dp");
  EXPECT_DOUBLE_EQ(traffic[0]["y"][0].get<double>(), 2.0);
  // Without a peak, model GFLOP/s: 1000 tokens/s × 6e6 FLOPs = 6 GFLOP/s; with one, MFU in %.
  EXPECT_DOUBLE_EQ((*chart(charts, "flops"))["series"][0]["y"][3].get<double>(), 6.0);
  const json mfu = report_charts(steps(20), summary, 6e6, 60);
  EXPECT_DOUBLE_EQ((*chart(mfu, "flops"))["series"][0]["y"][3].get<double>(), 10.0);
  // Per rank: mean compute and wait over the steps after the first.
  const json& ranks = *chart(charts, "ranks");
  EXPECT_EQ(ranks["categories"], json({"rank 0", "rank 1"}));
  EXPECT_DOUBLE_EQ(ranks["series"][1]["y"][1].get<double>(), 0.05);
}

TEST(Report, LongRunsAreThinnedAndResumedClocksAdd) {
  // 10,000 steps at most 2,000 points, the last step kept; validation points all kept.
  const json charts = report_charts(steps(10000), json::object(), 0, 0, 2000);
  const json& train = (*chart(charts, "loss"))["series"][0]["x"];
  EXPECT_LE(train.size(), 2001u);
  EXPECT_EQ(train.back(), 10000.0);
  EXPECT_EQ((*chart(charts, "loss"))["series"][1]["x"].size(), 2000u);
  EXPECT_EQ(chart(charts, "flops"), nullptr);  // no configuration: no FLOPs per token
  // A resumed run's clock starts again at 0: the second segment follows the first.
  std::vector<json> two = steps(4);
  std::vector<json> more = steps(4);
  for (json& j : more) j["step"] = j["step"].get<int>() + 4;
  two.insert(two.end(), more.begin(), more.end());
  const json resumed = report_charts(two, json::object(), 0, 0);
  const json& wall = (*chart(resumed, "loss_time"))["series"][0];
  EXPECT_NEAR(wall["x"][4].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(wall["x"][7].get<double>(), 0.8, 1e-12);
}

TEST(RunConfig, DataParallelReplicasFollowTheProcesses) {
  const Overrides tiny = {{"model.preset", "tiny"}, {"train.seq_len", "16"}};
  EXPECT_EQ(load_run_config("", tiny, ConfigUse::run, 6).parallel.layout.dp, 6);
  Overrides hybrid = tiny;
  hybrid.emplace_back("parallel.tp", "2");
  hybrid.emplace_back("parallel.pp", "2");
  EXPECT_EQ(load_run_config("", hybrid, ConfigUse::run, 8).parallel.layout.dp, 2);
  EXPECT_NE(error_of([&] { load_run_config("", hybrid, ConfigUse::run, 6); })
                .find("6 processes do not make whole replicas of --tp 2 × --pp 2 (4 processes "
                      "each)"),
            std::string::npos);
  // Parameter servers are not replicas.
  Overrides ps = tiny;
  ps.emplace_back("parallel.sync", "ps");
  ps.emplace_back("ps.servers", "2");
  EXPECT_EQ(load_run_config("", ps, ConfigUse::run, 5).parallel.layout.dp, 3);
  // A dp that is set stays: check_processes judges it.
  Overrides fixed = tiny;
  fixed.emplace_back("parallel.dp", "2");
  const RunConfig c = load_run_config("", fixed, ConfigUse::run, 3);
  EXPECT_EQ(c.parallel.layout.dp, 2);
  EXPECT_NE(error_of([&] { c.check_processes(3); }).find("--dp 2 need 2 processes but 3 started"),
            std::string::npos);
  // Without a launcher (processes 0), the default of one replica.
  EXPECT_EQ(load_run_config("", tiny).parallel.layout.dp, 1);
}

}  // namespace parallama
