// The byte-level BPE of tokenizer.json: the byte alphabet, merge order, ignore_merges, Llama 3's
// pre-token boundaries, added tokens, lossless round trips of any bytes, and the refusals. The
// expected ids are worked out by hand from the merge rules; tests/interop/llama3_tokenizer.sh
// holds the whole tokenizer to llama.cpp.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <random>
#include <string>
#include <vector>

#include "data/bpe.h"
#include "data/bpe_vocab.h"
#include "data/tokenizer.h"
#include "tensor/error.h"
#include "tensor/hash.h"

namespace parallama {
namespace {

using nlohmann::json;

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) return std::string(1, static_cast<char>(cp));
  if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
  }
  s += static_cast<char>(0x80 | (cp & 0x3F));
  return s;
}

// A tokenizer.json: the 256 byte tokens (ids 0..255 in byte order), then `extra` (spelled in the
// byte-level alphabet, ids from 256 on), then the added tokens <s> and </s> (special) and <tool>
// (not special).
struct Tok {
  json j;
  json config = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
  Tok(const std::vector<std::string>& extra, const json& merges, bool ignore_merges,
      const char* pattern = kLlama3SplitPattern) {
    json vocab = json::object();
    const auto alpha = byte_level_alphabet();
    int id = 0;
    for (int b = 0; b < 256; ++b) vocab[utf8(alpha[b])] = id++;
    for (const std::string& e : extra) vocab[e] = id++;
    json added = json::array();
    for (const char* s : {"<s>", "</s>", "<tool>"})
      added.push_back({{"id", id++}, {"content", s}, {"special", std::string(s) != "<tool>"}});
    j = {{"version", "1.0"},
         {"added_tokens", added},
         {"normalizer", nullptr},
         {"pre_tokenizer",
          {{"type", "Sequence"},
           {"pretokenizers",
            {{{"type", "Split"},
              {"pattern", {{"Regex", pattern}}},
              {"behavior", "Isolated"},
              {"invert", false}},
             {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
         {"model",
          {{"type", "BPE"},
           {"dropout", nullptr},
           {"ignore_merges", ignore_merges},
           {"vocab", vocab},
           {"merges", merges}}}};
  }
  int32_t id(const std::string& spelled) const { return j["model"]["vocab"][spelled]; }
  ByteBpe make() const { return ByteBpe(j.dump(), config.dump(), "tokenizer.json"); }
};

std::vector<int32_t> bytes_of(const std::string& s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

TEST(ByteBpe, AlphabetIsGpt2s) {
  const auto a = byte_level_alphabet();
  EXPECT_EQ(a['a'], uint32_t{'a'});
  EXPECT_EQ(a['!'], uint32_t{'!'});
  EXPECT_EQ(a[0], 0x100u);     // the first byte that is not printable
  EXPECT_EQ(a[' '], 0x120u);   // 'Ġ'
  EXPECT_EQ(a['\n'], 0x10Au);  // 'Ċ'
  EXPECT_EQ(a[0x7F], 0x121u);  // after the 33 of 0..32
  EXPECT_EQ(a[0xAD], 0x143u);  // the last one: soft hyphen
  EXPECT_EQ(a[0xAE], 0xAEu);
  std::vector<uint32_t> sorted(a.begin(), a.end());
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end());
}

TEST(ByteBpe, MergesApplyByRankNotByPosition) {
  // "abc": with b+c ranked first, a+bc follows and gives "abc"; with a+b first, "ab" + "c"
  // has no merge and stays two tokens.
  Tok first_bc({"bc", "ab", "abc"}, {"b c", "a b", "a bc"}, false);
  EXPECT_EQ(first_bc.make().encode("abc"), std::vector<int32_t>{first_bc.id("abc")});
  Tok first_ab({"bc", "ab", "abc"}, {"a b", "b c", "a bc"}, false);
  EXPECT_EQ(first_ab.make().encode("abc"), (std::vector<int32_t>{first_ab.id("ab"), 'c'}));
}

TEST(ByteBpe, EqualRanksMergeLeftmostFirst) {
  Tok t({"aa"}, {"a a"}, false);
  EXPECT_EQ(t.make().encode("aaa"), (std::vector<int32_t>{t.id("aa"), 'a'}));
  EXPECT_EQ(t.make().encode("aaaa"), (std::vector<int32_t>{t.id("aa"), t.id("aa")}));
}

TEST(ByteBpe, MergeStringsAndPairsReadTheSame) {
  Tok strings({"bc", "ab", "abc"}, {"b c", "a b", "a bc"}, false);
  Tok pairs({"bc", "ab", "abc"}, json::array({{"b", "c"}, {"a", "b"}, {"a", "bc"}}), false);
  EXPECT_EQ(strings.make().encode("abcabx"), pairs.make().encode("abcabx"));
  EXPECT_EQ(strings.make().merges(), pairs.make().merges());
}

TEST(ByteBpe, IgnoreMergesTakesAWholeWordFromTheVocabulary) {
  Tok with({"xyz"}, json::array(), true), without({"xyz"}, json::array(), false);
  EXPECT_EQ(with.make().encode("xyz"), std::vector<int32_t>{with.id("xyz")});
  EXPECT_EQ(without.make().encode("xyz"), bytes_of("xyz"));
}

TEST(ByteBpe, Llama3PreTokenBoundaries) {
  // With ignore_merges and whole pre-tokens in the vocabulary, the ids show where the pattern
  // cuts: digits in threes, a space before a word, contractions apart, the last of a run of
  // spaces before a word, newlines with the spaces before them.
  Tok t({"123", "45", "hello", "Ġworld", "it", "'s", "Ġb", "ĠĠ", "ĠĊ"}, json::array(), true);
  const ByteBpe b = t.make();
  EXPECT_EQ(b.encode("12345"), (std::vector<int32_t>{t.id("123"), t.id("45")}));
  EXPECT_EQ(b.encode("hello world"), (std::vector<int32_t>{t.id("hello"), t.id("Ġworld")}));
  EXPECT_EQ(b.encode("it's"), (std::vector<int32_t>{t.id("it"), t.id("'s")}));
  EXPECT_EQ(b.encode("it'S"), (std::vector<int32_t>{t.id("it"), '\'', 'S'}));  // "'S" a pre-token
  EXPECT_EQ(b.encode("a   b"), (std::vector<int32_t>{'a', t.id("ĠĠ"), t.id("Ġb")}));
  EXPECT_EQ(b.encode("a \nb"), (std::vector<int32_t>{'a', t.id("ĠĊ"), 'b'}));
  EXPECT_EQ(b.llama_cpp_pre(), "llama-bpe");
  Tok gpt2({}, json::array(), false, kGpt2Pattern);
  EXPECT_EQ(gpt2.make().llama_cpp_pre(), "gpt-2");
  Tok other({}, json::array(), false, R"(\S+|\s+)");
  EXPECT_EQ(other.make().llama_cpp_pre(), "");
}

TEST(ByteBpe, AddedTokensAreNeverSplit) {
  Tok t({"<s"}, {"< s"}, false);
  const ByteBpe b = t.make();
  const int32_t bos = 256 + 1, eos = 257 + 1, tool = 258 + 1;
  EXPECT_EQ(b.bos_id(), bos);
  EXPECT_EQ(b.eos_id(), eos);
  EXPECT_EQ(b.encode("<s>x</s>"), (std::vector<int32_t>{bos, 'x', eos}));
  EXPECT_EQ(b.encode("<s"), std::vector<int32_t>{t.id("<s")});  // not the whole token
  EXPECT_EQ(b.encode("a<tool>b"), (std::vector<int32_t>{'a', tool, 'b'}));
  // Decoding drops special tokens, keeps other added ones.
  EXPECT_EQ(b.decode({bos, 'h', 'i', tool, eos}), "hi<tool>");
  EXPECT_EQ(b.token_types()[bos], 3);
  EXPECT_EQ(b.token_types()[tool], 4);
  EXPECT_EQ(b.token_types()['a'], 1);
}

TEST(ByteBpe, AddedTokenStripsWhitespaceWhenAsked) {
  Tok t({}, json::array(), false);
  t.j["added_tokens"][2]["lstrip"] = true;
  t.j["added_tokens"][2]["rstrip"] = true;
  const int32_t tool = 258;
  EXPECT_EQ(t.make().encode("a  <tool>  b"), (std::vector<int32_t>{'a', tool, 'b'}));
}

TEST(ByteBpe, AnyBytesRoundTrip) {
  Tok t({"Ġt", "he", "Ġthe", "Ã©"}, {"Ġ t", "h e", "Ġt he", "Ã ©"}, true);
  const ByteBpe b = t.make();
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 4 ? " theé\n\t1"[rng() % 9] : rng() % 256);
    EXPECT_EQ(b.decode(b.encode(s)), s) << "trial " << trial;
  }
  EXPECT_EQ(b.encode(" the"), std::vector<int32_t>{t.id("Ġthe")});
  EXPECT_EQ(b.encode("\xFF\xFE"), (std::vector<int32_t>{0xFF, 0xFE}));  // not UTF-8: bytes
}

void expect_refused(const json& j, const std::string& want, const json& config = json()) {
  try {
    ByteBpe(j.dump(), config.is_null() ? std::string() : config.dump(), "t.json");
    ADD_FAILURE() << "accepted; wanted: " << want;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
}

TEST(ByteBpe, RefusesWhatItCannotRead) {
  const Tok good({"ab"}, {"a b"}, false);
  json j = good.j;
  j["model"]["type"] = "WordPiece";
  expect_refused(j, "the model is WordPiece, not BPE", good.config);
  j = good.j;
  j["model"]["merges"].push_back("a zz");
  expect_refused(j, "names 'zz', which is not in the vocabulary", good.config);
  j = good.j;
  j["model"]["merges"].push_back("b a");  // "ba" is not a token
  expect_refused(j, "names 'ba'", good.config);
  j = good.j;
  j["model"]["vocab"].erase("ab");
  j["model"]["merges"] = json::array();
  expect_refused(j, "no token has id 256", good.config);
  j = good.j;
  j["model"]["vocab"].erase("a");
  expect_refused(j, "no token has id 97", good.config);
  j = good.j;
  j["normalizer"] = {{"type", "NFKC"}};
  expect_refused(j, "the normalizer NFKC is not supported", good.config);
  j = good.j;
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_refused(j, "the pre-tokenizer Whitespace is not supported", good.config);
  expect_refused(good.j, "no BOS token");  // no tokenizer_config.json, no template
  expect_refused(good.j, "the BOS token '<bos>' is not a token", {{"bos_token", "<bos>"}});
  try {
    ByteBpe("{\"model\": {\"type\": \"BPE\", \"vocab\": {", "", "t.json");
    ADD_FAILURE() << "accepted truncated JSON";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("t.json: not JSON"), std::string::npos) << e.what();
  }
}

TEST(ByteBpe, BosFromThePostProcessorWithoutAConfig) {
  Tok t({}, json::array(), false);
  t.j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}}};
  t.j["added_tokens"][1]["content"] = "<|end_of_text|>";
  const ByteBpe b(t.j.dump(), "", "t.json");
  EXPECT_EQ(b.bos_id(), 256);
  EXPECT_EQ(b.eos_id(), 257);
  EXPECT_TRUE(b.adds_bos());
}

TEST(Tokenizer, ReadsATokenizerJson) {
  Tok t({"ab"}, {"a b"}, false);
  const std::string text = t.j.dump(), config = t.config.dump();
  const Tokenizer tok(Tokenizer::from_bytes, text, "dir/tokenizer.json", config);
  EXPECT_NE(tok.byte_bpe(), nullptr);
  EXPECT_EQ(tok.vocab_size(), 256 + 1 + 3);
  EXPECT_EQ(tok.bos_id(), 257);
  EXPECT_EQ(tok.eos_id(), 258);
  EXPECT_EQ(tok.hash(), fnv1a64(config, fnv1a64(text)));  // both files, as tokenizer_hash does
  EXPECT_EQ(tok.encode("ab"), std::vector<int32_t>{256});
  EXPECT_EQ(tok.decode({257, 256, 'c'}), "abc");
}

}  // namespace
}  // namespace parallama
