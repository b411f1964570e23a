// Pipeline stage boundaries: by estimated cost, by measured time, or even; a measured head that
// costs several layers moves layers off the last stage.
#include <gtest/gtest.h>

#include <random>

#include "parallel/mesh.h"
#include "tensor/error.h"
#include "train/run_config.h"
#include "train/stage_time.h"

namespace parallama {

namespace {

MeshShape two_stages(PpBalance balance) {
  MeshShape s;
  s.pp = 2, s.seq_len = 16, s.pp_balance = balance;
  return s;
}

LlamaConfig six_layers() {
  LlamaConfig m = llama_preset("tiny");
  m.n_layers = 6;
  return m;
}

}  // namespace

TEST(StageSplit, EvenMeasuredAndEstimated) {
  const LlamaConfig m = six_layers();
  EXPECT_EQ(pipeline_split(m, two_stages(PpBalance::even)), (std::vector<int>{3, 3}));
  MeshShape measured = two_stages(PpBalance::measure);
  // Before a measurement: the estimate.
  EXPECT_EQ(pipeline_split(m, measured), pipeline_split(m, two_stages(PpBalance::cost)));
  measured.measured = {1.0, 0.1, 2.0};  // the head costs two layers: 7 + 2 over two stages
  EXPECT_EQ(pipeline_split(m, measured), (std::vector<int>{4, 2}));
  measured.measured = {1.0, 4.0, 0.0};  // an (absurdly) expensive embedding: the other way
  EXPECT_EQ(pipeline_split(m, measured), (std::vector<int>{1, 5}));
  EXPECT_NE(describe_mesh(m, measured).find("balanced by measured time"), std::string::npos);
  EXPECT_NE(describe_mesh(m, two_stages(PpBalance::even)).find("even: layers alone"),
            std::string::npos);
}

// Every split against a scan of every boundary (what the split computed before it bisected):
// the same layers, ties broken the same way, over random stage costs, including equal ones.
TEST(StageSplit, BisectionEqualsAFullScan) {
  auto scan = [](int L, int S, const StageCosts& c) {
    auto cost = [&](int k, int j, int i) {
      return (i - j) * c.layer + (k == 1 ? c.embedding : 0.0) + (k == S ? c.head : 0.0);
    };
    std::vector<std::vector<double>> best(S + 1, std::vector<double>(L + 1, 1e300));
    std::vector<std::vector<int>> from(S + 1, std::vector<int>(L + 1, 0));
    best[0][0] = 0.0;
    for (int k = 1; k <= S; ++k)
      for (int i = k; i <= L - (S - k); ++i)
        for (int j = k - 1; j < i; ++j) {
          const double v = std::max(best[k - 1][j], cost(k, j, i));
          if (v < best[k][i]) best[k][i] = v, from[k][i] = j;
        }
    std::vector<int> layers(S);
    for (int k = S, i = L; k >= 1; --k) layers[k - 1] = i - from[k][i], i = from[k][i];
    return layers;
  };
  std::mt19937 rng(7);
  const double choices[] = {0.0, 0.5, 1.0, 2.0, 3.0, 7.5};
  for (int trial = 0; trial < 400; ++trial) {
    LlamaConfig m = llama_preset("tiny");
    m.n_layers = 1 + static_cast<int>(rng() % 40);
    MeshShape s;
    s.pp = 1 + static_cast<int>(rng() % std::min(8, m.n_layers));
    s.seq_len = 16, s.pp_balance = PpBalance::measure;
    s.measured = {1.0 + static_cast<double>(rng() % 3), choices[rng() % 6], choices[rng() % 6]};
    ASSERT_EQ(pipeline_split(m, s), scan(m.n_layers, s.pp, s.measured))
        << m.n_layers << " layers, pp " << s.pp << ", embedding " << s.measured.embedding
        << ", head " << s.measured.head;
  }
}

TEST(StageSplit, ChoicesAreChecked) {
  EXPECT_THROW(load_run_config("", {{"parallel.pp_balance", "fastest"}, {"train.seq_len", "16"}}),
               Error);
  EXPECT_NO_THROW(
      load_run_config("", {{"parallel.pp_balance", "measure"}, {"train.seq_len", "16"}}));
}

TEST(StageSplit, MeasuredOnThisMachine) {
  RunConfig cfg = load_run_config("", {{"model.preset", "tiny"},
                                       {"train.seq_len", "16"},
                                       {"train.batch_size", "4"},
                                       {"model.vocab_size", "32000"}});
  comm::Group alone;
  const StageCosts c = measure_stage_costs(cfg, alone);
  EXPECT_GT(c.layer, 0);
  EXPECT_GT(c.head, 0);
  EXPECT_GE(c.embedding, 0);
  // A 32000-wide head outweighs a table lookup by far more than a scheduling spike (at 4000 wide,
  // 63 against 29 us per token was seen under the sanitizers beside other work).
  EXPECT_LT(c.embedding, c.head);
}

}  // namespace parallama
