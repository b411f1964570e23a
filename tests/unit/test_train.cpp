// The run configuration, learning-rate schedule, clipping, checkpoints and KV-cache generation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "infer/generate.h"
#include "io/checkpoint.h"
#include "model/llama.h"
#include "optim/schedule.h"
#include "tensor/error.h"
#include "test_util.h"
#include "train/run_config.h"

namespace parallama {

using test::error_of;

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

TEST(Schedule, WarmupThenCosineToTheFloor) {
  EXPECT_FLOAT_EQ(lr_at(1, 1.0f, 0.1f, 10, 110), 0.1f);
  EXPECT_FLOAT_EQ(lr_at(10, 1.0f, 0.1f, 10, 110), 1.0f);
  EXPECT_NEAR(lr_at(60, 1.0f, 0.1f, 10, 110), 0.55f, 1e-6);  // halfway down the cosine
  EXPECT_FLOAT_EQ(lr_at(110, 1.0f, 0.1f, 10, 110), 0.1f);
  EXPECT_FLOAT_EQ(lr_at(500, 1.0f, 0.1f, 10, 110), 0.1f);
  EXPECT_GT(lr_at(30, 1.0f, 0.1f, 10, 110), lr_at(31, 1.0f, 0.1f, 10, 110));
}

struct Tiny {
  LlamaConfig cfg = llama_preset("tiny");
  ParamLayout layout{cfg, ModelShard::whole(cfg)};
  ParamBuffer params{layout}, grads{layout};
  Tiny() { init_params(params, 4); }
};

TEST(Clip, GlobalNormOverAllTensors) {
  Tiny m;
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
  Tiny m;
  OptimConfig oc;
  Optimizer opt(m.layout, oc);
  m.grads.visit([](const ParamSpec& s, float* g) {
    for (int64_t i = 0; i < s.numel; ++i) g[i] = 1e-3f * float(i % 5);
  });
  opt.step(m.params, m.grads, 1e-3f);
  const auto dir = (fs::temp_directory_path() / "parallama_ckpt_test" / "step-1").string();
  fs::remove_all(fs::path(dir).parent_path());
  save_checkpoint(dir, m.params, opt, {1, 96, {{"note", "x"}}, {}});
  for (const auto& e :
       fs::directory_iterator(fs::path(dir).parent_path()))  // no temporary left behind
    EXPECT_EQ(e.path().filename().string()[0] != '.', true) << e.path();
  Tiny m2;
  Optimizer opt2(m2.layout, oc);
  const auto st = load_checkpoint(dir, m2.params, opt2);
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
              load_checkpoint(dir, m2.params, opt2);
            }).find("optimizer.safetensors: checksum"),
            std::string::npos);
  fs::resize_file(dir + "/model.safetensors", 100);
  EXPECT_NE(error_of([&] { load_checkpoint(dir, m2.params, opt2); }).find("model.safetensors"),
            std::string::npos);
  std::ofstream(dir + "/trainer.json") << "{\"step\": 1,";
  EXPECT_NE(error_of([&] { load_checkpoint(dir, m2.params, opt2); }).find("trainer.json: corrupt"),
            std::string::npos);
  fs::remove(dir + "/trainer.json");
  EXPECT_NE(
      error_of([&] { load_checkpoint(dir, m2.params, opt2); }).find("not a complete checkpoint"),
      std::string::npos);
  fs::remove_all(fs::path(dir).parent_path());
}

TEST(Generator, KvCacheLogitsEqualTheFullForward) {
  Tiny m;
  const int64_t T = 12, V = m.cfg.vocab_size;
  std::vector<int32_t> tok(T), tgt(T, 0);
  for (int64_t t = 0; t < T; ++t) tok[t] = int32_t((t * 29 + 5) % V);
  Llama model(m.layout, 1, T);
  model.forward(m.params, tok.data(), tgt.data());
  Generator gen(m.layout, m.params);
  for (int64_t t = 0; t < T; ++t) {
    const float* l = gen.feed(tok[t]);
    std::vector<float> a(l, l + V), b(model.logits() + t * V, model.logits() + (t + 1) * V);
    EXPECT_LT(test::rel_err(a, b), 1e-5) << "position " << t;
  }
  // Greedy generation is deterministic; sampling with a seed is reproducible.
  SampleConfig sc;
  sc.max_tokens = 5;
  sc.temperature = 0.0f;
  EXPECT_EQ(gen.generate({1, 2, 3}, sc, -1), gen.generate({1, 2, 3}, sc, -1));
  sc.temperature = 1.0f;
  EXPECT_EQ(gen.generate({1, 2, 3}, sc, -1), gen.generate({1, 2, 3}, sc, -1));
  EXPECT_EQ(gen.generate({1, 2, 3}, sc, -1).size(), 5u);
}

}  // namespace parallama
