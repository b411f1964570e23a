// KV-cache generation against the full forward of the model: the logits, greedy decoding, and
// top-p sampling, which must stay inside the nucleus and follow its probabilities.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "infer/generate.h"
#include "model/llama.h"
#include "test_util.h"

namespace parallama {

using test::TinyModel;

namespace {

// The full forward's logits (T, V) over a whole sequence.
std::vector<float> full_logits(const TinyModel& m, const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size()), V = m.cfg.vocab_size;
  Llama model(m.layout, 1, T);
  const std::vector<int32_t> targets(T, 0);
  model.forward(m.params, tokens.data(), targets.data());
  return {model.logits(), model.logits() + T * V};
}

// softmax(logits / temperature) in double, and the token ids by falling probability.
std::vector<double> probabilities(const float* logits, int64_t V, double temperature) {
  const double mx = *std::max_element(logits, logits + V);
  std::vector<double> p(V);
  double sum = 0.0;
  for (int64_t v = 0; v < V; ++v) sum += p[v] = std::exp((logits[v] - mx) / temperature);
  for (double& x : p) x /= sum;
  return p;
}

std::vector<int32_t> by_probability(const std::vector<double>& p) {
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  return order;
}

}  // namespace

TEST(Generator, KvCacheLogitsEqualTheFullForward) {
  TinyModel m;
  const int64_t T = 12, V = m.cfg.vocab_size;
  std::vector<int32_t> tok(T);
  for (int64_t t = 0; t < T; ++t) tok[t] = int32_t((t * 29 + 5) % V);
  const std::vector<float> full = full_logits(m, tok);
  Generator gen(m.layout, m.params);
  for (int64_t t = 0; t < T; ++t) {
    const float* l = gen.feed(tok[t]);
    std::vector<float> a(l, l + V), b(full.begin() + t * V, full.begin() + (t + 1) * V);
    EXPECT_LT(test::rel_err(a, b), 1e-5) << "position " << t;
  }
}

TEST(Generator, GreedyIsTheArgmaxOfTheFullForwardAtEveryStep) {
  TinyModel m;
  const int64_t V = m.cfg.vocab_size, maxT = m.cfg.max_seq_len;
  Generator gen(m.layout, m.params);
  SampleConfig sc;
  sc.temperature = 0.0f;
  sc.max_tokens = 1000;  // until the context is full
  for (const std::vector<int32_t>& prompt :
       {std::vector<int32_t>{1, 2, 3}, {50}, {7, 99, 13, 42, 0, 64}}) {
    const std::vector<int32_t> out = gen.generate(prompt, sc, -1);
    const int64_t P = static_cast<int64_t>(prompt.size());
    // The last token is sampled from the logits of position maxT - 1 and never fed.
    ASSERT_EQ(P + static_cast<int64_t>(out.size()), maxT + 1);
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), out.begin(), out.end() - 1);
    const std::vector<float> full = full_logits(m, seq);
    std::set<int32_t> distinct;
    for (size_t i = 0; i < out.size(); ++i) {
      const float* row = full.data() + (P - 1 + static_cast<int64_t>(i)) * V;
      const int32_t best = static_cast<int32_t>(std::max_element(row, row + V) - row);
      // Equal to the argmax; another token only for a tie within rounding.
      if (out[i] != best) {
        EXPECT_LT(row[best] - row[out[i]], 1e-5f * std::fabs(row[best]) + 1e-6f)
            << "step " << i << ": sampled " << out[i] << ", argmax " << best;
      }
      distinct.insert(out[i]);
    }
    EXPECT_GT(distinct.size(), 1u) << "a constant output tests little";
    // Stops at the end-of-sequence id, which it does not return.
    for (const int32_t eos : {out[0], out[3]})
      EXPECT_EQ(gen.generate(prompt, sc, eos),
                std::vector<int32_t>(out.begin(), std::find(out.begin(), out.end(), eos)));
  }
}

// A KV cache of only the positions a prompt and its continuation need samples the same tokens
// as one of the model's whole context, and says so when that short context is full.
TEST(Generator, AShortContextGeneratesTheSameTokens) {
  TinyModel m;
  const std::vector<int32_t> prompt = {1, 2, 3, 4};
  SampleConfig sc;
  sc.temperature = 0.7f;
  sc.max_tokens = 5;
  Generator whole(m.layout, m.params);
  Generator just(m.layout, m.params, {}, static_cast<int64_t>(prompt.size()) + sc.max_tokens);
  const std::vector<int32_t> a = whole.generate(prompt, sc, -1), b = just.generate(prompt, sc, -1);
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(a, b);
  sc.max_tokens = 7;  // more than the short cache holds: it stops where its context ends
  EXPECT_EQ(just.generate(prompt, sc, -1).size(), 6u);
}

TEST(Generator, TopPNeverSamplesOutsideTheNucleus) {
  TinyModel m;
  const int64_t V = m.cfg.vocab_size;
  const std::vector<int32_t> prompt = {5};
  Generator gen(m.layout, m.params);
  const float* l = nullptr;
  for (int32_t t : prompt) l = gen.feed(t);
  const std::vector<float> logits(l, l + V);
  const float temperature = 0.5f;
  const std::vector<double> p = probabilities(logits.data(), V, temperature);
  const std::vector<int32_t> order = by_probability(p);
  // top_p halfway between the mass of the 5 and of the 6 most likely tokens: the nucleus is
  // exactly those 6, far from any rounding edge.
  const int nucleus = 6;
  double below = 0.0;
  for (int i = 0; i < nucleus - 1; ++i) below += p[order[i]];
  const double mass = below + p[order[nucleus - 1]];
  ASSERT_GT(p[order[nucleus - 1]], 1e-3) << "the test needs a nucleus edge away from rounding";
  SampleConfig sc;
  sc.temperature = temperature;
  sc.top_p = static_cast<float>((below + mass) / 2);
  sc.max_tokens = 1;
  const int draws = 2000;
  std::vector<int> count(V, 0);
  for (int s = 1; s <= draws; ++s) {
    sc.seed = static_cast<uint64_t>(s);
    const std::vector<int32_t> out = gen.generate(prompt, sc, -1);
    ASSERT_EQ(out.size(), 1u);
    ++count[out[0]];
  }
  for (int i = 0; i < V; ++i) {
    const int32_t v = order[i];
    if (i >= nucleus) {
      EXPECT_EQ(count[v], 0) << "token " << v << " (rank " << i << ") is outside the nucleus";
      continue;
    }
    // Inside: the renormalised probability, within 5 standard deviations.
    const double q = p[v] / mass, expect = draws * q;
    EXPECT_NEAR(count[v], expect, 5 * std::sqrt(expect * (1 - q)) + 1)
        << "token " << v << " (rank " << i << ")";
  }
  // A nucleus of one token: the argmax, whatever the seed.
  sc.top_p = static_cast<float>(p[order[0]] / 2);
  for (int s = 1; s <= 50; ++s) {
    sc.seed = static_cast<uint64_t>(s);
    EXPECT_EQ(gen.generate(prompt, sc, -1), std::vector<int32_t>{order[0]}) << "seed " << s;
  }
}

}  // namespace parallama
