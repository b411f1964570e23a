// Token shards, the tokenizer, and the data loader.
#include <gtest/gtest.h>

#include "test_util.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "tensor/error.h"

namespace parallama {

using test::error_of;

namespace fs = std::filesystem;

static std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / name).string();
}

TEST(Shard, RoundTripBothWidthsAndRefusesDamage) {
  for (uint64_t vocab : {300ull, 100000ull}) {
    std::vector<int32_t> toks = {0, 1, 299, 42, 7, 299};
    if (vocab > 65536) toks.push_back(99999);
    const auto path = tmp("parallama_shard_test.bin");
    write_shard(path, toks, vocab, 0xabcdef);
    const auto s = read_shard(path);
    EXPECT_EQ(s.tokens, toks);
    EXPECT_EQ(s.header.vocab_size, vocab);
    EXPECT_EQ(s.header.tokenizer_hash, 0xabcdefu);
    EXPECT_EQ(s.header.token_bytes, vocab > 65536 ? 4u : 2u);
    EXPECT_EQ(fs::file_size(path), 64 + toks.size() * s.header.token_bytes);
    fs::resize_file(path, fs::file_size(path) - 1);  // truncated
    EXPECT_NE(error_of([&] { read_shard(path); }).find("truncated"), std::string::npos);
    std::ofstream(path, std::ios::binary)
        << "not a shard at all, just some text padding it out to 64 bytes......";
    EXPECT_NE(error_of([&] { read_shard(path); }).find("bad magic"), std::string::npos);
    fs::remove(path);
  }
  EXPECT_NE(error_of([] {
              write_shard(tmp("x.bin"), {5, 300}, 300, 0);
            }).find("outside"),
            std::string::npos);
  EXPECT_NE(error_of([] { read_shard("/nonexistent/x.bin"); }).find("cannot read"),
            std::string::npos);
}

TEST(Tokenizer, TrainingIsDeterministicAndLossless) {
  std::vector<std::string> lines;
  for (int i = 0; i < 400; ++i)
    lines.push_back("And the LORD spake unto Moses, saying, verse " + std::to_string(i) +
                    (i % 3 ? " and it was so." : " Behold, the days come."));
  const std::string a = Tokenizer::train(lines, 380), b = Tokenizer::train(lines, 380);
  EXPECT_EQ(a, b);
  const auto path = tmp("parallama_tok_test.model");
  std::ofstream(path, std::ios::binary) << a;
  const Tokenizer tok(path);
  EXPECT_EQ(tok.vocab_size(), 380);
  // Byte fallback: text with characters never seen in training still round-trips.
  const std::string text = "Moses said: ☃ naïve 123";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  EXPECT_LT(tok.encode("And the LORD spake unto Moses").size(), 15u);  // merges were learned
  fs::remove(path);
  EXPECT_NE(error_of([] { Tokenizer("/nonexistent/tok.model"); }).find("cannot read"),
            std::string::npos);
}

TEST(Loader, EachEpochVisitsEverySampleOnceInASeededOrder) {
  std::vector<int32_t> toks(1001);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t(i);
  const int64_t T = 10;
  DataLoader a(toks, T, 7, 0, 1), b(toks, T, 7, 0, 1), c(toks, T, 8, 0, 1);
  ASSERT_EQ(a.num_samples(), 100);
  std::vector<int64_t> e0, e1;
  for (int64_t g = 0; g < 100; ++g)
    e0.push_back(a.sample_at(g)), e1.push_back(a.sample_at(100 + g));
  std::set<int64_t> s0(e0.begin(), e0.end()), s1(e1.begin(), e1.end());
  EXPECT_EQ(s0.size(), 100u);
  EXPECT_EQ(s1.size(), 100u);
  EXPECT_NE(e0, e1);  // a new order each epoch
  int same = 0, differs = 0;
  for (int64_t g = 0; g < 100; ++g)
    same += b.sample_at(g) == e0[g], differs += c.sample_at(g) != e0[g];
  EXPECT_EQ(same, 100);    // same seed, same order
  EXPECT_GT(differs, 90);  // another seed, another order
  // Inputs and targets are the window shifted by one.
  std::vector<int32_t> in(2 * T), tgt(2 * T);
  a.micro_batch(0, 2, in.data(), tgt.data());
  EXPECT_EQ(in[0], e0[0] * T);
  for (int64_t t = 0; t < 2 * T; ++t) EXPECT_EQ(tgt[t], in[t] + 1);
}

TEST(Loader, GlobalBatchIsTheSameWhateverTheRankCount) {
  std::vector<int32_t> toks(5000);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t(i);
  const int64_t T = 8, B = 3, K = 2;  // 3 sequences per micro-batch, 2 micro-batches
  auto collect = [&](int world) {
    std::multiset<int32_t> firsts;
    for (int step = 0; step < 5; ++step)
      for (int r = 0; r < world; ++r) {
        DataLoader l(toks, T, 11, r, world);
        l.set_position(int64_t(step) * B * K * 4);  // global batch of 4 ranks' worth: 24 samples
        for (int k = 0; k < K * 4 / world; ++k) {
          std::vector<int32_t> in(B * T), tgt(B * T);
          l.micro_batch(k, B, in.data(), tgt.data());
          for (int64_t b = 0; b < B; ++b) firsts.insert(in[b * T]);
        }
      }
    return firsts;
  };
  const auto one = collect(1);
  EXPECT_EQ(one.size(), 5u * 24u);
  EXPECT_EQ(std::set<int32_t>(one.begin(), one.end()).size(), one.size());  // disjoint samples
  EXPECT_EQ(collect(2), one);
  EXPECT_EQ(collect(4), one);
}

TEST(Loader, RefusesDataShorterThanOneSequence) {
  std::vector<int32_t> toks(10);
  EXPECT_NE(error_of([&] { DataLoader(toks, 10, 1, 0, 1); }).find("fewer than one sequence"),
            std::string::npos);
}

}  // namespace parallama
