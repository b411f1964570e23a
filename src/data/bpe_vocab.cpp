#include "data/bpe_vocab.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "data/bpe.h"
#include "io/json_depth.h"
#include "tensor/error.h"

namespace parallama {

using nlohmann::json;

namespace {

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

class Reader {
 public:
  explicit Reader(const std::string& name) : name_(name) {
    const auto alpha = byte_level_alphabet();
    for (int b = 0; b < 256; ++b) byte_of_[alpha[b]] = static_cast<unsigned char>(b);
  }
  [[noreturn]] void fail(const std::string& what) const { throw Error(name_ + ": " + what); }

  // The bytes a vocabulary token stands for: each character of its spelling is one byte.
  std::string bytes_of(const std::string& spelled) const {
    std::string out;
    for (size_t i = 0; i < spelled.size();) {
      const auto c = static_cast<unsigned char>(spelled[i]);
      const int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      uint32_t cp = len == 1 ? c : c & (0x3F >> (len - 1));
      for (int k = 1; k < len && i + k < spelled.size(); ++k)
        cp = (cp << 6) | (static_cast<unsigned char>(spelled[i + k]) & 0x3F);
      const auto it = byte_of_.find(cp);
      if (it == byte_of_.end())
        fail("the token '" + spelled + "' has a character outside the byte-level alphabet: " +
             "not a byte-level BPE vocabulary");
      out += static_cast<char>(it->second);
      i += static_cast<size_t>(len);
    }
    return out;
  }

  void pre_tokenizer(const json& pt, BpeVocab& v) const;
  void model(const json& m, BpeVocab& v, std::unordered_map<std::string, int32_t>& spelled) const;
  void special_ids(const json& j, const json& config,
                   const std::unordered_map<std::string, int32_t>& by_text, BpeVocab& v) const;

 private:
  const std::string& name_;
  std::unordered_map<uint32_t, unsigned char> byte_of_;
};

void Reader::pre_tokenizer(const json& pt, BpeVocab& v) const {
  if (pt.is_null()) fail("no pre_tokenizer: a byte-level BPE has a ByteLevel pre-tokenizer");
  std::vector<json> steps;
  if (pt.value("type", "") == "Sequence")
    for (const json& s : pt.at("pretokenizers")) steps.push_back(s);
  else
    steps.push_back(pt);
  bool byte_level = false;
  for (const json& s : steps) {
    const std::string type = s.value("type", "");
    if (type == "Split") {
      if (!v.pattern.empty()) fail("more than one Split pre-tokenizer");
      if (!s.at("pattern").contains("Regex"))
        fail("the Split pre-tokenizer's pattern is not a Regex");
      v.pattern = s.at("pattern").at("Regex").get<std::string>();
      if (s.value("behavior", "") != "Isolated" || s.value("invert", false))
        fail("the Split pre-tokenizer's behavior is not Isolated (not inverted)");
    } else if (type == "ByteLevel") {
      byte_level = true;
      if (s.value("add_prefix_space", false))
        fail("the ByteLevel pre-tokenizer adds a prefix space, which parallama does not do");
      if (s.value("use_regex", true)) {
        if (!v.pattern.empty()) fail("a Split pattern and a ByteLevel pattern both");
        v.pattern = kGpt2Pattern;
      }
    } else {
      fail("the pre-tokenizer " + (type.empty() ? std::string("without a type") : type) +
           " is not supported (parallama reads a Split pattern with ByteLevel, as Llama 3's, or "
           "ByteLevel alone, as GPT-2's)");
    }
  }
  if (!byte_level) fail("the pre-tokenizer has no ByteLevel step: not a byte-level BPE");
  if (v.pattern.empty()) fail("the pre-tokenizer has no pattern");
}

void Reader::model(const json& m, BpeVocab& v,
                   std::unordered_map<std::string, int32_t>& spelled) const {
  const std::string type = m.value("type", "BPE");
  if (type != "BPE")
    fail("the model is " + type + ", not BPE: parallama reads byte-level BPE tokenizers (as " +
         "Llama 3's); a sentencepiece model goes as tokenizer.model");
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    fail("BPE dropout is not supported");
  if (m.value("byte_fallback", false))
    fail(
        "a BPE with byte_fallback is sentencepiece-style, not byte-level: use its tokenizer.model");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && !m[k].is_null() && !m[k].get<std::string>().empty())
      fail(std::string(k) + " is not supported in a byte-level BPE");
  if (!m.contains("vocab") || !m["vocab"].is_object())
    fail("the BPE model has no vocab (an object of token: id)");
  if (!m.contains("merges") || !m["merges"].is_array())
    fail("the BPE model has no merges (an array)");
  v.ignore_merges = m.value("ignore_merges", false);
  for (const auto& [text, id] : m.at("vocab").items()) {
    const int64_t i = id.get<int64_t>();
    if (i < 0 || i >= (int64_t{1} << 31) - 1) fail("token '" + text + "' has id " + id.dump());
    if (!spelled.emplace(text, static_cast<int32_t>(i)).second) fail("token '" + text + "' twice");
  }
  if (spelled.empty()) fail("the vocabulary is empty");
}

void Reader::special_ids(const json& j, const json& config,
                         const std::unordered_map<std::string, int32_t>& by_text,
                         BpeVocab& v) const {
  // The post-processor's template ("single"): a special token first means BOS is added.
  std::string template_bos;
  std::vector<json> procs;
  if (j.contains("post_processor") && !j["post_processor"].is_null()) {
    const json& pp = j["post_processor"];
    if (pp.value("type", "") == "Sequence")
      for (const json& p : pp.at("processors")) procs.push_back(p);
    else
      procs.push_back(pp);
  }
  for (const json& p : procs)
    if (p.value("type", "") == "TemplateProcessing" && p.contains("single") &&
        !p["single"].empty() && p["single"][0].contains("SpecialToken")) {
      template_bos = p["single"][0]["SpecialToken"].at("id").get<std::string>();
      v.adds_bos = true;
    }
  auto named = [&](const char* key) -> std::string {  // "bos_token": "x" or {"content": "x"}
    if (!config.is_object() || !config.contains(key) || config[key].is_null()) return {};
    const json& t = config[key];
    return t.is_string() ? t.get<std::string>() : t.at("content").get<std::string>();
  };
  auto id_of = [&](const std::string& text, const char* what) {
    const auto it = by_text.find(text);
    if (it == by_text.end()) fail(std::string(what) + " '" + text + "' is not a token");
    return it->second;
  };
  std::string bos = named("bos_token");
  if (bos.empty()) bos = template_bos;
  if (bos.empty())
    fail(
        "no BOS token: tokenizer_config.json beside it names none (bos_token), nor does the "
        "post-processor");
  v.bos = id_of(bos, "the BOS token");
  if (config.is_object() && config.contains("add_bos_token") &&
      config["add_bos_token"].is_boolean())
    v.adds_bos = config["add_bos_token"].get<bool>();
  std::string eos = named("eos_token");
  for (const char* guess : {"<|end_of_text|>", "<|endoftext|>", "</s>"})
    if (eos.empty() && by_text.count(guess)) eos = guess;
  if (eos.empty()) fail("no EOS token: tokenizer_config.json beside it names none (eos_token)");
  v.eos = id_of(eos, "the EOS token");
}

void read_merges(const Reader& r, const json& merges,
                 const std::unordered_map<std::string, int32_t>& spelled, BpeVocab& v) {
  auto id_of = [&](const std::string& s, size_t rank, const std::string& merge) {
    const auto it = spelled.find(s);
    if (it == spelled.end())
      r.fail("merge " + std::to_string(rank) + " ('" + merge + "') names '" + s +
             "', which is not in the vocabulary");
    return it->second;
  };
  v.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    std::string left, right;
    if (m.is_string()) {  // "left right"
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        r.fail("merge " + std::to_string(rank) + " ('" + s + "') is not two tokens");
      left = s.substr(0, sp), right = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2) {  // ["left", "right"]
      left = m[0].get<std::string>(), right = m[1].get<std::string>();
    } else {
      r.fail("merge " + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    const std::string both = left + " " + right;
    const int32_t l = id_of(left, rank, both), rt = id_of(right, rank, both);
    const int32_t merged = id_of(left + right, rank, both);
    if (v.merges.emplace(pair_key(l, rt), BpeVocab::Merge{static_cast<int32_t>(rank), merged})
            .second)
      v.merge_list.emplace_back(l, rt);
  }
}

// Every id in 0..n-1 once: the vocabulary's tokens, and the added tokens (which may repeat a
// vocabulary token with its id).
void assign_ids(const Reader& r, const json& added_tokens,
                const std::unordered_map<std::string, int32_t>& spelled, BpeVocab& v,
                std::unordered_map<std::string, int32_t>& by_text) {
  int64_t n = 0;
  for (const auto& [s, id] : spelled) n = std::max<int64_t>(n, id + 1);
  for (const json& a : added_tokens) n = std::max<int64_t>(n, a.at("id").get<int64_t>() + 1);
  v.bytes.assign(static_cast<size_t>(n), {});
  v.spelled.assign(static_cast<size_t>(n), {});
  v.kind.assign(static_cast<size_t>(n), TokenKind::normal);
  std::vector<char> have(static_cast<size_t>(n), 0);
  for (const auto& [s, id] : spelled) {
    v.spelled[id] = s;
    v.bytes[id] = r.bytes_of(s);
    have[id] = 1;
    by_text.emplace(s, id);
    v.by_bytes.emplace(v.bytes[id], id);
  }
  for (const json& a : added_tokens) {
    AddedToken t{a.at("content").get<std::string>(), a.at("id").get<int32_t>(),
                 a.value("lstrip", false), a.value("rstrip", false)};
    if (t.id < 0) r.fail("added token '" + t.content + "' has id " + std::to_string(t.id));
    if (t.content.empty()) r.fail("an added token (id " + std::to_string(t.id) + ") is empty");
    if (have[t.id] && v.spelled[t.id] != t.content)
      r.fail("id " + std::to_string(t.id) + " is both '" + v.spelled[t.id] +
             "' and the added "
             "token '" +
             t.content + "'");
    if (have[t.id] == 1) v.by_bytes.erase(v.bytes[t.id]);
    have[t.id] = 2;
    v.spelled[t.id] = v.bytes[t.id] = t.content;
    v.kind[t.id] = a.value("special", false) ? TokenKind::special : TokenKind::added;
    by_text[t.content] = t.id;
    v.added.push_back(std::move(t));
  }
  for (int64_t id = 0; id < n; ++id) {
    if (!have[id])
      r.fail("no token has id " + std::to_string(id) + " (the ids must run from 0 to " +
             std::to_string(n - 1) + ", each once)");
    v.max_token_bytes = std::max(v.max_token_bytes, v.bytes[id].size());
  }
}

}  // namespace

std::array<uint32_t, 256> byte_level_alphabet() {
  std::array<uint32_t, 256> cp{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    cp[b] = printable ? b : next++;
  }
  return cp;
}

BpeVocab read_bpe_vocab(const std::string& json_text, const std::string& config_text,
                        const std::string& name) {
  const Reader r(name);
  BpeVocab v;
  try {
    json j, config;
    try {
      j = parse_json_bounded(json_text, 64);
      if (!config_text.empty()) config = parse_json_bounded(config_text, 64);
    } catch (const json::parse_error& e) {
      r.fail(std::string("not JSON (") + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("model")) r.fail("not a tokenizer.json (it has no model)");
    if (j.contains("normalizer") && !j["normalizer"].is_null())
      r.fail("the normalizer " + j["normalizer"].value("type", std::string("?")) +
             " is not supported (a byte-level BPE as Llama 3's has none)");
    std::unordered_map<std::string, int32_t> spelled, by_text;
    r.model(j["model"], v, spelled);
    r.pre_tokenizer(j.value("pre_tokenizer", json()), v);
    const json added = j.value("added_tokens", json::array());
    assign_ids(r, added, spelled, v, by_text);
    const auto alpha = byte_level_alphabet();
    for (int b = 0; b < 256; ++b) {
      const auto it = spelled.find(utf8(alpha[b]));
      if (it == spelled.end() || v.kind[it->second] != TokenKind::normal) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", b);
        r.fail(std::string("the vocabulary has no token for byte ") + hex + " ('" + utf8(alpha[b]) +
               "'): a byte-level BPE needs all 256");
      }
      v.byte_id[b] = it->second;
    }
    read_merges(r, j["model"].at("merges"), spelled, v);
    r.special_ids(j, config, by_text, v);
  } catch (const json::exception& e) {
    r.fail(std::string("malformed (") + e.what() + ")");
  }
  return v;
}

}  // namespace parallama
