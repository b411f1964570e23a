// The run configuration, learning-rate schedule, clipping, checkpoints and gradient accumulation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "kernels/cross_entropy.h"
#include "model/llama.h"
#include "optim/schedule.h"
#include "tensor/error.h"
#include "test_util.h"
#include "train/run_config.h"
#include "train/step.h"

namespace parallama {

using test::error_of;
using test::TinyModel;

namespace fs = std::filesystem;

TEST(RunConfig, OverridesAreTypedAndUnknownKeysRefused) {
  const auto c =
      load_run_config("", parse_overrides({"--model.preset", "kjv-small", "--optim.lr=3e-4",
                                           "--train.steps", "7", "--data.dir", "some/where"}));
  EXPECT_EQ(c.model.dim, 288);
  EXPECT_FLOAT_EQ(c.optim.lr, 3e-4f);
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_EQ(c.data.dir, "some/where");
  EXPECT_NE(error_of([] {
              load_run_config("", {{"train.bach_size", "4"}});
            }).find("unknown key 'train.bach_size'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              load_run_config("", {{"train.batch_size", "\"4\""}});
            }).find("must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              load_run_config("", {{"model.dim", "50"}});
            }).find("not divisible"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_overrides({"stray"}); }).find("unexpected argument"),
            std::string::npos);
  // The config written into checkpoints reads back to the same values.
  const auto back = config_from_json(config_to_json(c), "test");
  EXPECT_EQ(config_to_json(back), config_to_json(c));
}

TEST(RunConfig, ACommandChecksOnlyTheKeysItUses) {
  // The tiny model's context (16) is shorter than the default train.seq_len (256): a training
  // run is refused, the model alone is fine.
  const Overrides tiny = {{"model.preset", "tiny"}};
  EXPECT_NE(error_of([&] { load_run_config("", tiny); }).find("exceeds model.max_seq_len 16"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { load_run_config("", tiny, ConfigUse::model); }), "");
  EXPECT_EQ(load_run_config("", tiny, ConfigUse::model).model.max_seq_len, 16);
  // Still strict about the model, about unknown keys and about types everywhere.
  EXPECT_NE(error_of([] {
              load_run_config("", {{"model.dim", "50"}}, ConfigUse::model);
            }).find("not divisible"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              load_run_config("", {{"train.bach_size", "4"}}, ConfigUse::model);
            }).find("unknown key 'train.bach_size'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              load_run_config("", {{"optim.lr", "\"fast\""}}, ConfigUse::model);
            }).find("must be a number"),
            std::string::npos);
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  EXPECT_FLOAT_EQ(lr_at(1, 1.0f, 0.1f, 10, 110), 0.1f);
  EXPECT_FLOAT_EQ(lr_at(10, 1.0f, 0.1f, 10, 110), 1.0f);
  EXPECT_NEAR(lr_at(60, 1.0f, 0.1f, 10, 110), 0.55f, 1e-6);  // halfway down the cosine
  EXPECT_FLOAT_EQ(lr_at(110, 1.0f, 0.1f, 10, 110), 0.1f);
  EXPECT_FLOAT_EQ(lr_at(500, 1.0f, 0.1f, 10, 110), 0.1f);
  EXPECT_GT(lr_at(30, 1.0f, 0.1f, 10, 110), lr_at(31, 1.0f, 0.1f, 10, 110));
}

TEST(Clip, GlobalNormOverAllTensors) {
  TinyModel m;
  double expect = 0;
  m.grads.visit([&](const ParamSpec& s, float* g) {
    for (int64_t i = 0; i < s.numel; ++i)
      g[i] = 0.01f * float((i % 7) - 3), expect += double(g[i]) * g[i];
  });
  const double norm = grad_norm(m.grads);
  EXPECT_NEAR(norm, std::sqrt(expect), 1e-9 * norm);
  EXPECT_FLOAT_EQ(clip_grads(m.grads, norm, float(norm * 2)), 1.0f);  // under the limit: untouched
  clip_grads(m.grads, norm, 0.5f);
  EXPECT_NEAR(grad_norm(m.grads), 0.5, 1e-6);
}

TEST(Checkpoint, RoundTripAndCorruptFilesAreNamed) {
  TinyModel m;
  OptimConfig oc;
  Optimizer opt(m.layout, oc);
  m.grads.visit([](const ParamSpec& s, float* g) {
    for (int64_t i = 0; i < s.numel; ++i) g[i] = 1e-3f * float(i % 5);
  });
  opt.step(m.params, m.grads, 1e-3f);
  const auto dir = (fs::temp_directory_path() / "parallama_ckpt_test" / "step-1").string();
  fs::remove_all(fs::path(dir).parent_path());
  comm::Group one;  // one process: the whole model, the writer
  save_checkpoint(dir, m.params, opt, {1, 96, {{"note", "x"}, {"tokenizer_hash", 0}}, {}, {}}, one,
                  one, true);
  for (const auto& e :
       fs::directory_iterator(fs::path(dir).parent_path()))  // no temporary left behind
    EXPECT_EQ(e.path().filename().string()[0] != '.', true) << e.path();
  TinyModel m2;
  Optimizer opt2(m2.layout, oc);
  const auto st = load_checkpoint(dir, m2.params, opt2, one, one);
  EXPECT_EQ(st.step, 1);
  EXPECT_EQ(st.data_position, 96);
  EXPECT_EQ(opt2.steps_taken(), 1);
  EXPECT_TRUE(std::equal(m.params.data(), m.params.data() + m.params.size(), m2.params.data()));
  // A flipped byte in the optimizer state, then a truncated model: refused, naming the file.
  {
    std::fstream f(dir + "/optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-5, std::ios::end);
    f.put('\x7f');
  }
  EXPECT_NE(error_of([&] {
              load_checkpoint(dir, m2.params, opt2, one, one);
            }).find("optimizer.safetensors: checksum"),
            std::string::npos);
  fs::resize_file(dir + "/model.safetensors", 100);
  EXPECT_NE(
      error_of([&] { load_checkpoint(dir, m2.params, opt2, one, one); }).find("model.safetensors"),
      std::string::npos);
  std::ofstream(dir + "/trainer.json") << "{\"step\": 1,";
  EXPECT_NE(error_of([&] {
              load_checkpoint(dir, m2.params, opt2, one, one);
            }).find("trainer.json: corrupt"),
            std::string::npos);
  fs::remove(dir + "/trainer.json");
  EXPECT_NE(error_of([&] {
              load_checkpoint(dir, m2.params, opt2, one, one);
            }).find("not a complete checkpoint"),
            std::string::npos);
  fs::remove_all(fs::path(dir).parent_path());
}

// Gradient accumulation in the trainer's step: every micro-batch's backward is scaled by
// 1 / (valid targets of the global batch). A micro-batch whose targets are all ignored adds no
// loss and no gradient, and nothing is divided by its zero count; nor by a zero total.
TEST(Training, AMicroBatchWithEveryTargetIgnoredAddsNothing) {
  struct NoSync : Synchronizer {
    SyncStep update(Replica&, float, int64_t) override { return {}; }
  } none;
  const RunConfig cfg = load_run_config(
      "", {{"model.preset", "tiny"}, {"train.batch_size", "2"}, {"train.seq_len", "8"}});
  const int64_t N = 2 * 8, V = cfg.model.vocab_size;
  std::vector<int32_t> tokens(2 * N), targets(2 * N, kernels::kIgnoreIndex);
  for (int64_t i = 0; i < 2 * N; ++i) tokens[i] = int32_t((i * 31 + 7) % V);
  for (int64_t i = N; i < 2 * N; ++i) targets[i] = int32_t((i * 17 + 2) % V);  // micro-batch 1
  // The real micro-batch alone.
  TrainState alone(cfg);
  const double expect = alone.forward_backward(tokens.data() + N, targets.data() + N, 1, N, none);
  ASSERT_GT(expect, 0.0);
  ASSERT_GT(grad_norm(alone.grads), 0.0);
  auto same_as_alone = [&](const TrainState& st, const char* what) {
    for (int64_t i = 0; i < st.grads.size(); ++i) {
      ASSERT_TRUE(std::isfinite(st.grads.data()[i])) << what << ": gradient " << i;
      ASSERT_EQ(st.grads.data()[i], alone.grads.data()[i]) << what << ": gradient " << i;
    }
  };
  // With an ignored micro-batch first (accumulated locally) or last (handed to the synchronizer).
  TrainState first(cfg);
  EXPECT_EQ(first.forward_backward(tokens.data(), targets.data(), 2, N, none), expect);
  same_as_alone(first, "ignored micro-batch first");
  std::vector<int32_t> swapped_tokens(tokens.begin() + N, tokens.end()),
      swapped_targets(targets.begin() + N, targets.end());
  swapped_tokens.insert(swapped_tokens.end(), tokens.begin(), tokens.begin() + N);
  swapped_targets.insert(swapped_targets.end(), targets.begin(), targets.begin() + N);
  TrainState last(cfg);
  EXPECT_EQ(last.forward_backward(swapped_tokens.data(), swapped_targets.data(), 2, N, none),
            expect);
  same_as_alone(last, "ignored micro-batch last");
  // A global batch without any target: no loss, no gradient.
  TrainState empty(cfg);
  EXPECT_EQ(empty.forward_backward(tokens.data(), targets.data(), 1, 0, none), 0.0);
  EXPECT_EQ(grad_norm(empty.grads), 0.0);
}

}  // namespace parallama
