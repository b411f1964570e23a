// Pipeline stage boundaries: by estimated cost, by measured time, or even; a measured head that
// costs several layers moves layers off the last stage.
#include <gtest/gtest.h>

#include "parallel/mesh.h"
#include "tensor/error.h"
#include "train/run_config.h"
#include "train/stage_time.h"

namespace parallama {

namespace {

MeshShape two_stages(const std::string& balance) {
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
  EXPECT_EQ(pipeline_split(m, two_stages("even")), (std::vector<int>{3, 3}));
  MeshShape measured = two_stages("measure");
  // Before a measurement: the estimate.
  EXPECT_EQ(pipeline_split(m, measured), pipeline_split(m, two_stages("cost")));
  measured.measured = {1.0, 0.1, 2.0};  // the head costs two layers: 7 + 2 over two stages
  EXPECT_EQ(pipeline_split(m, measured), (std::vector<int>{4, 2}));
  measured.measured = {1.0, 4.0, 0.0};  // an (absurdly) expensive embedding: the other way
  EXPECT_EQ(pipeline_split(m, measured), (std::vector<int>{1, 5}));
  EXPECT_NE(describe_mesh(m, measured).find("balanced by measured time"), std::string::npos);
  EXPECT_NE(describe_mesh(m, two_stages("even")).find("even: layers alone"), std::string::npos);
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
                                       {"model.vocab_size", "4000"}});
  comm::Group alone;
  const StageCosts c = measure_stage_costs(cfg, alone);
  EXPECT_GT(c.layer, 0);
  EXPECT_GT(c.head, 0);
  EXPECT_GE(c.embedding, 0);
  EXPECT_LT(c.embedding, c.head);  // a 4000-wide head outweighs a table lookup
}

}  // namespace parallama
