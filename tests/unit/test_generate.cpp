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
#include "tensor/error.h"
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

// Several sequences through the model at once, with prompts split across calls and a call
// mixing prompt tokens of one sequence with decode steps of others: the logits of each segment's
// last token equal the full forward's at that position.
TEST(Generator, BatchedDecodeLogitsEqualTheFullForward) {
  TinyModel m;
  const int64_t V = m.cfg.vocab_size;
  std::vector<std::vector<int32_t>> seqs(3);
  for (int64_t s = 0; s < 3; ++s)
    for (int64_t t = 0; t < 5 + 5 * s; ++t)  // up to max_seq_len 16
      seqs[s].push_back(int32_t((t * (31 + 4 * s) + 3 * s + 1) % V));
  std::vector<std::vector<float>> full;
  for (const auto& q : seqs) full.push_back(full_logits(m, q));
  Decoder model(m.layout, 8);  // 8 rows a call
  KVCache cache(model, 3, m.cfg.max_seq_len);
  // Calls of (sequence, tokens) segments, ending with single-token steps of all three.
  const std::vector<std::vector<DecodeSegment>> calls = {
      {{0, 3}, {1, 5}}, {{2, 8}}, {{1, 4}, {0, 1}, {2, 3}}, {{0, 1}, {1, 1}, {2, 1}}, {{2, 3}}};
  int checked = 0;
  for (const auto& call : calls) {
    std::vector<int32_t> rows;
    for (const DecodeSegment& g : call) {
      const auto& q = seqs[g.seq];
      const int64_t at = cache.length(g.seq);
      ASSERT_LE(at + g.count, static_cast<int64_t>(q.size()));
      rows.insert(rows.end(), q.begin() + at, q.begin() + at + g.count);
    }
    const float* l = model.decode(m.params, cache, call, rows.data());
    for (size_t g = 0; g < call.size(); ++g) {
      const int64_t pos = cache.length(call[g].seq) - 1;  // the segment's last token
      const std::vector<float> a(l + g * V, l + (g + 1) * V);
      const std::vector<float> b(full[call[g].seq].begin() + pos * V,
                                 full[call[g].seq].begin() + (pos + 1) * V);
      EXPECT_LT(test::rel_err(a, b), 1e-5) << "sequence " << call[g].seq << " position " << pos;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 10);
  for (int64_t s = 0; s < 3; ++s) EXPECT_EQ(cache.length(s), static_cast<int64_t>(seqs[s].size()));
  // A segment past the cache's end is refused.
  const int32_t one = 1;
  KVCache tiny(model, 1, 2);
  model.decode(m.params, tiny, {{0, 1}}, &one);
  model.decode(m.params, tiny, {{0, 1}}, &one);
  EXPECT_THROW(model.decode(m.params, tiny, {{0, 1}}, &one), Error);
}

// A batch of prompts of different lengths, each with its own seed, generates what each prompt
// generates alone, whether its prompt is fed in one call or split over several.
TEST(Generator, ABatchGeneratesWhatEachPromptAlone) {
  TinyModel m;
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 2, 3}, {50}, {7, 99, 13, 42, 0, 64, 8, 9, 10, 11, 12}, {4, 4}};
  std::vector<SampleConfig> sc(prompts.size());
  for (size_t i = 0; i < sc.size(); ++i) {
    sc[i].temperature = 0.9f, sc[i].seed = 11 + i, sc[i].max_tokens = 6 + 3 * int(i);
  }
  sc[1].temperature = 0.0f;
  Generator alone(m.layout, m.params);
  for (const int64_t rows : {int64_t{0}, int64_t{5}}) {
    SCOPED_TRACE("rows " + std::to_string(rows));
    Generator batch(m.layout, m.params, {}, 0, 4, rows);
    const std::vector<Generated> out = batch.generate_batch(prompts, sc, -1);
    ASSERT_EQ(out.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(out[i].tokens, alone.generate(prompts[i], sc[i], -1)) << "prompt " << i;
      // max_tokens, or up to the end of the context (16): the last token sampled is not fed.
      const auto room = static_cast<int64_t>(m.cfg.max_seq_len - prompts[i].size() + 1);
      EXPECT_EQ(static_cast<int64_t>(out[i].tokens.size()),
                std::min<int64_t>(sc[i].max_tokens, room));
      EXPECT_GT(out[i].seconds, 0.0);
    }
  }
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
