// Token shards, the tokenizer, and the data loader.
#include <gtest/gtest.h>

#include "test_util.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "tensor/error.h"
#include "train/plot.h"

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

// A shard made by hand: the 64-byte header, then 4-byte ids.
static std::string shard_bytes(uint32_t width, uint64_t vocab, const std::vector<uint32_t>& ids) {
  std::string b(64, '\0');
  b.replace(0, 8, "PLLAMATK");
  const uint32_t version = 1;
  const uint64_t count = ids.size();
  std::memcpy(b.data() + 8, &version, 4);
  std::memcpy(b.data() + 12, &width, 4);
  std::memcpy(b.data() + 16, &count, 8);
  std::memcpy(b.data() + 24, &vocab, 8);
  for (uint32_t id : ids) b.append(reinterpret_cast<const char*>(&id), width);
  return b;
}

TEST(Shard, EveryIdIsInZeroToVocabAndAVocabAboveInt32IsRefused) {
  const auto path = tmp("parallama_shard_vocab.bin");
  // A header vocabulary above 2^31 - 1 would let 4-byte ids of 2^31 and more through as
  // negative int32 ids.
  std::ofstream(path, std::ios::binary) << shard_bytes(4, uint64_t{1} << 32, {5, 0x80000000u});
  const std::string e = error_of([&] { read_shard(path); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("above 2^31 - 1"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  // The largest vocabulary int32 ids allow reads, from a file and from memory alike.
  const std::string ok = shard_bytes(4, 0x7fffffffu, {0, 0x7ffffffeu});
  std::ofstream(path, std::ios::binary | std::ios::trunc) << ok;
  EXPECT_EQ(read_shard(path).tokens, (std::vector<int32_t>{0, 0x7ffffffe}));
  EXPECT_EQ(parse_shard(ok.data(), ok.size(), "mem").tokens, read_shard(path).tokens);
  const std::string id_at_vocab = shard_bytes(4, 0x7fffffffu, {0x7fffffffu});
  EXPECT_NE(error_of([&] {
              parse_shard(id_at_vocab.data(), id_at_vocab.size(), "mem");
            }).find("outside the vocabulary"),
            std::string::npos);
  // A width other than the one the vocabulary takes (2 bytes up to 65536 ids) is refused.
  const std::string wide = shard_bytes(4, 300, {1, 2});
  EXPECT_NE(error_of([&] { parse_shard(wide.data(), wide.size(), "mem"); }).find("width 4"),
            std::string::npos);
  EXPECT_NE(error_of([] { write_shard(tmp("x.bin"), {1}, uint64_t{1} << 31, 0); }).find("2^31"),
            std::string::npos);
  fs::remove(path);
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
  // The first n tokens of a long text, from a prefix: the same as encoding it whole, also when
  // the cut falls inside a character; and a bound on the tokens of a text of b bytes.
  std::string book;
  for (const std::string& l : lines) book += l + " ☃ naïve ";
  const std::vector<int32_t> whole = tok.encode(book);
  for (int64_t n : {1, 7, 64, 300}) {
    const std::vector<int32_t> want(whole.begin(), whole.begin() + n);
    EXPECT_EQ(tok.encode_first(book, n), want) << n;
  }
  EXPECT_EQ(tok.encode_first("Moses", 100), tok.encode("Moses"));
  EXPECT_LE(tok.min_tokens(book.size()), static_cast<int64_t>(whole.size()));
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

// The bytes of every file in `dir`, by name.
static std::map<std::string, std::string> files_in(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    files[e.path().filename().string()].assign(std::istreambuf_iterator<char>(in), {});
  }
  return files;
}

// Entries of `dir` whose names hold `part`.
static std::vector<std::string> entries_with(const std::string& dir, const std::string& part) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(part) != std::string::npos)
      found.push_back(e.path().filename().string());
  return found;
}

TEST(Prepare, AFailureLeavesTheOldSetAndBadInputIsRefused) {
  const std::string dir = tmp("parallama_prepare_test"), out = dir + "/data";
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream text(dir + "/text.txt");
    for (int i = 0; i < 400; ++i)
      text << "And the LORD spake unto Moses, saying, verse " << i
           << (i % 3 ? " and it was so.\n" : " Behold, the days come.\n");
  }
  PrepareOptions opt;
  opt.texts = {dir + "/text.txt"};
  opt.vocab_size = 400;
  opt.out_dir = out;
  prepare(opt);
  std::ofstream(out + "/notes.txt") << "kept";
  const auto before = files_in(out);
  ASSERT_EQ(before.size(), 5u);

  auto refused = [&](PrepareOptions o, const std::string& want) {
    const std::string msg = error_of([&] { prepare(o); });
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(files_in(out), before) << "after: " << msg;
    EXPECT_TRUE(entries_with(dir, ".tmp-").empty()) << msg;
  };
  PrepareOptions o = opt;
  o.tokenizer = dir + "/text.txt";
  refused(o, "text.txt is not a sentencepiece model");
  std::ofstream(dir + "/bin.txt", std::ios::binary) << "In the beginning\nGod\xff\xfe\n";
  o = opt;
  o.texts = {dir + "/bin.txt"};
  refused(o, "bin.txt: line 2, byte offset 20 holds byte 0xFF, which is not valid UTF-8");
  std::ofstream(dir + "/nul.txt", std::ios::binary) << std::string("abc\0def\n", 8);
  o.texts = {dir + "/text.txt", dir + "/nul.txt"};
  refused(o, "nul.txt: line 1, byte offset 3 holds a NUL byte");
  o.texts = {dir};
  refused(o, "is a directory, not a text file");
  o = opt;
  o.vocab_size = 100000;
  refused(o, "--vocab 100000 is more than this text can give");

  // A killed prepare's directory is swept (999999999 is no process); reusing the set's own
  // tokenizer gives the same bytes and keeps the user's file.
  fs::create_directories(dir + "/.data.tmp-999999999");
  o = opt;
  o.tokenizer = out + "/tokenizer.model";
  prepare(o);
  EXPECT_EQ(files_in(out), before);
  EXPECT_TRUE(entries_with(dir, ".tmp-").empty());
  fs::remove_all(dir);
}

TEST(Plot, AFailedWriteIsAnErrorAndALinkIsFollowed) {
  const std::string dir = tmp("parallama_plot_write_test");
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir + "/metrics.jsonl")
      << "{\"step\": 1, \"loss\": 5.5}\n{\"step\": 2, \"loss\": 4}\n";
  fs::create_symlink("/dev/full", dir + "/loss.svg");
  const std::string msg = error_of([&] { plot_losses(dir); });
  EXPECT_NE(msg.find("cannot write " + dir + "/loss.svg: No space left on device"),
            std::string::npos)
      << msg;
  fs::remove(dir + "/loss.svg");
  fs::create_symlink("elsewhere.svg", dir + "/loss.svg");
  EXPECT_EQ(plot_losses(dir), dir + "/loss.svg");
  EXPECT_TRUE(fs::is_symlink(dir + "/loss.svg"));
  std::ifstream svg(dir + "/elsewhere.svg");
  EXPECT_NE(std::string(std::istreambuf_iterator<char>(svg), {}).find("<polyline"),
            std::string::npos);
  EXPECT_TRUE(entries_with(dir, ".tmp").empty());
  fs::remove_all(dir);
}

}  // namespace parallama
