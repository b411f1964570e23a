// The classifier on the tiny model: gradients of the head, the final norm, the pooling and the
// body against finite differences; padding changes nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "finetune/classifier.h"
#include "finetune/train.h"
#include "finetune/verses.h"
#include "io/checkpoint.h"
#include "scratch_dir.h"
#include "test_util.h"

namespace parallama::finetune {

namespace {

struct TinyClassifier {
  static constexpr int64_t B = 3, T = 6;
  static constexpr int K = 3;
  LlamaConfig cfg = llama_preset("tiny");
  ParamLayout layout = classifier_layout(cfg, K);
  ParamBuffer params{layout}, grads{layout};  // the body, then the head
  HeadLayout hl{layout};
  Classifier clf{layout, B, T};
  // Rows of 6 and 3 real tokens, and a padding row; labels; weights as a batch of 4 would give.
  std::vector<int32_t> tokens = std::vector<int32_t>(B * T, 0), lengths = {6, 3, 0},
                       labels = {2, 0, 1};
  std::vector<float> weights = {0.25f, 0.25f, 0.0f};
  TinyClassifier() {
    init_params(params, 11);
    init_head(params, 5, 0.5f);
    std::mt19937 rng(7);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < lengths[b]; ++t) tokens[b * T + t] = 1 + rng() % (cfg.vocab_size - 1);
    for (int64_t c = 0; c < hl.C; ++c)
      params.data()[hl.norm() + c] = 1.0f + 0.3f * std::sin(static_cast<float>(c));
  }
  int64_t body_size() const { return hl.base; }  // the body's floats come first
  double loss() {
    return clf.forward(params, tokens.data(), lengths.data(), labels.data(), weights.data(), false);
  }
  void gradients() {
    grads.zero();
    clf.forward(params, tokens.data(), lengths.data(), labels.data(), weights.data(), true);
    clf.backward(params, grads);
  }
};

// Central difference of the loss in one float, in fp32 arithmetic (step h).
template <class F>
double central(float& x, F loss, float h) {
  const float keep = x;
  x = keep + h;
  const double up = loss();
  x = keep - h;
  const double down = loss();
  x = keep;
  return (up - down) / (2.0 * h);
}

}  // namespace

TEST(ClassifierGrad, HeadNormAndPoolingMatchFiniteDifferences) {
  TinyClassifier m;
  m.gradients();
  const HeadLayout& hl = m.hl;
  int checked = 0;
  // Every bias, a spread of head weights and of final-norm weights.
  std::vector<int64_t> at;
  for (int64_t k = 0; k < hl.K; ++k) at.push_back(hl.bias() + k);
  for (int64_t i = 0; i < hl.K * hl.C; i += 7) at.push_back(hl.weight() + i);
  for (int64_t c = 0; c < hl.C; c += 5) at.push_back(hl.norm() + c);
  double num2 = 0, den2 = 0;
  for (int64_t i : at) {
    const double fd = central(
        m.params.data()[i], [&] { return m.loss(); }, 1e-2f);
    const double g = m.grads.data()[i];
    num2 += (fd - g) * (fd - g);
    den2 += fd * fd;
    EXPECT_NEAR(g, fd, 2e-3 + 2e-2 * std::fabs(fd)) << "head element " << i;
    ++checked;
  }
  EXPECT_LT(std::sqrt(num2 / den2), 1e-2);
  EXPECT_GT(checked, 30);
  EXPECT_GT(den2, 1e-4);  // the check is not vacuous
}

TEST(ClassifierGrad, BodyGradientThroughPoolingMatchesADirectionalDifference) {
  TinyClassifier m;
  m.gradients();
  // A random direction over every body parameter: (L(x + h·d) − L(x − h·d)) / 2h ≈ ∇L · d.
  const int64_t n = m.body_size();
  std::vector<float> d = test::randn(n, 21);
  std::vector<float> x0(m.params.data(), m.params.data() + n);
  double analytic = 0;
  for (int64_t i = 0; i < n; ++i) analytic += double(m.grads.data()[i]) * d[i];
  const float h = 2e-4f;
  auto at = [&](float s) {
    for (int64_t i = 0; i < n; ++i) m.params.data()[i] = x0[i] + s * d[i];
    return m.loss();
  };
  const double fd = (at(h) - at(-h)) / (2.0 * h);
  at(0.0f);
  EXPECT_GT(std::fabs(analytic), 1e-3);
  EXPECT_NEAR(analytic, fd, 2e-2 * std::fabs(fd) + 1e-4);
  // The embedding rows of padding never get a gradient from the padded positions: id 0 fills
  // them, and no real token is 0 here.
  const ParamSpec& emb = m.layout.find("model.embed_tokens.weight");
  for (int64_t c = 0; c < m.cfg.dim; ++c) EXPECT_EQ(m.grads.at(emb)[c], 0.0f);
}

TEST(ClassifierGrad, PaddingAndZeroWeightRowsChangeNothing) {
  TinyClassifier m;
  const double base = m.loss();
  const std::vector<float> p0(m.clf.probabilities(), m.clf.probabilities() + 2 * m.K);
  // Other tokens after a row's real ones, and in the padding row.
  for (int64_t t = 3; t < m.T; ++t) m.tokens[1 * m.T + t] = 42;
  for (int64_t t = 0; t < m.T; ++t) m.tokens[2 * m.T + t] = 17;
  EXPECT_EQ(m.loss(), base);
  for (int k = 0; k < 2 * m.K; ++k) EXPECT_EQ(m.clf.probabilities()[k], p0[k]);
  // The loss is the weighted sum of the rows' cross-entropies.
  const float* p = m.clf.probabilities();
  const double want = -0.25 * std::log(p[0 * m.K + 2]) - 0.25 * std::log(p[1 * m.K + 0]);
  EXPECT_NEAR(base, want, 1e-6);
}

class ClassifierCheckpoint : public test::ScratchDirTest {};

// What finetune records for a classifier of m's shape with three labels.
ClassifierMeta toy_meta(const TinyClassifier& m) {
  ClassifierMeta meta;
  meta.task = "toy", meta.labels = {"a", "b", "c"}, meta.seq_len = m.T;
  meta.cfg.model = m.cfg;
  meta.cfg.train.seq_len = m.T;
  return meta;
}

TEST_F(ClassifierCheckpoint, SavesAndLoadsBodyAndHead) {
  TinyClassifier m;
  const std::string dir = dir_.string();
  ClassifierMeta meta = toy_meta(m);
  const std::string tok = dir + "/tok.model";
  { std::ofstream(tok) << "not read here"; }
  save_classifier(dir + "/c", meta, m.params, tok);
  EXPECT_EQ(find_classifier(dir + "/c"), dir + "/c");
  const ClassifierMeta back = read_classifier_meta(dir + "/c");
  EXPECT_EQ(back.labels, meta.labels);
  EXPECT_EQ(back.seq_len, m.T);
  ParamBuffer loaded(m.layout);
  load_classifier_weights(dir + "/c", loaded);
  for (int64_t i = 0; i < loaded.size(); ++i) ASSERT_EQ(loaded.data()[i], m.params.data()[i]) << i;
  // A directory without a head is refused with one line naming the way to make one.
  std::filesystem::create_directories(dir + "/lm");
  { std::ofstream(dir + "/lm/trainer.json") << "{}"; }
  EXPECT_NE(
      test::error_of([&] { find_classifier(dir + "/lm"); }).find("without a classification head"),
      std::string::npos);
}

// classifier.json is sealed like trainer.json: an edit, a stripped seal (format 1), another
// tokenizer or changed weights are refused with one line; labels are distinct on save and load.
TEST_F(ClassifierCheckpoint, SealedTokenizerCheckedAndLabelsDistinct) {
  TinyClassifier m;
  const std::string dir = dir_.string(), c = dir + "/c";
  ClassifierMeta meta = toy_meta(m);
  const std::string tok = dir + "/tok.model";
  { std::ofstream(tok) << "a tokenizer"; }
  auto read_json = [&] {
    std::ifstream in(c + "/classifier.json");
    return nlohmann::json::parse(in);
  };
  auto write_json = [&](const nlohmann::json& j) {
    std::ofstream(c + "/classifier.json") << j.dump(1) << "\n";
  };
  auto load_error = [&] { return test::error_of([&] { read_classifier_meta(c); }); };
  save_classifier(c, meta, m.params, tok);
  const nlohmann::json good = read_json();
  EXPECT_EQ(good["format"], 2);
  EXPECT_EQ(load_error(), "");

  nlohmann::json j = good;
  j["labels"] = {"c", "b", "a"};  // swapped answers
  write_json(j);
  EXPECT_NE(load_error().find("does not match the one recorded"), std::string::npos)
      << load_error();
  j = good;
  j.erase("checksum"), j.erase("tokenizer_hash"), j.erase("checksums");
  j["format"] = 1;
  write_json(j);
  EXPECT_NE(load_error().find("classifier format 1"), std::string::npos) << load_error();
  j = good;
  j["labels"] = {"a", "b", "a"};
  seal_json(j);
  write_json(j);
  EXPECT_NE(load_error().find("the label \"a\" appears twice"), std::string::npos) << load_error();
  write_json(good);
  { std::ofstream(c + "/tokenizer.model") << "another tokenizer"; }
  EXPECT_NE(load_error().find("is not the tokenizer"), std::string::npos) << load_error();
  std::filesystem::copy_file(tok, c + "/tokenizer.model",
                             std::filesystem::copy_options::overwrite_existing);
  { std::ofstream(c + "/model.safetensors", std::ios::app) << "x"; }
  EXPECT_NE(load_error().find("model.safetensors: checksum"), std::string::npos) << load_error();

  meta.labels = {"a", "b", "a"};
  EXPECT_NE(test::error_of([&] {
              save_classifier(dir + "/d", meta, m.params, tok);
            }).find("appears twice"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir + "/d"));
  for (Task t : {Task::testament, Task::genre})
    EXPECT_EQ(test::error_of([&] { check_distinct_labels(task_labels(t), "t"); }), "");
}

// A classifier whose weights are not finite (a training that diverged, saved by another tool) is
// refused by classify before anything is read or written, instead of printing null
// probabilities.
TEST_F(ClassifierCheckpoint, NonFiniteWeightsAreRefusedByClassify) {
  TinyClassifier m;
  const std::string dir = dir_.string(), c = dir + "/c";
  ClassifierMeta meta = toy_meta(m);
  const std::string tok = dir + "/tok.model";
  { std::ofstream(tok) << "a tokenizer"; }
  { std::ofstream(dir + "/text.txt") << "In the beginning\n"; }
  m.params.data()[m.hl.norm() + 1] = std::nanf("");
  save_classifier(c, meta, m.params, tok);
  const std::string err = test::error_of(
      [&] { run_classify(c, dir + "/text.txt", dir + "/out.jsonl", 2, comm::Group()); });
  EXPECT_NE(err.find("not finite"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/out.jsonl"));
}

TEST_F(ClassifierCheckpoint, DataWithARepeatedLabelIsRefused) {
  const std::string d = dir_.string();
  std::ofstream(d + "/labels.json") << R"({"task": "x", "labels": ["old", "new", "old"]})";
  std::ofstream(d + "/train.jsonl") << R"({"text": "a", "label": 0})"
                                    << "\n";
  std::ofstream(d + "/test.jsonl") << R"({"text": "b", "label": 1})"
                                   << "\n";
  const std::string e = test::error_of([&] { read_dataset(d); });
  EXPECT_EQ(e, d + "/labels.json: the label \"old\" appears twice; labels must be distinct");
}

}  // namespace parallama::finetune
