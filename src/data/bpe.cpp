#include "data/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "data/bpe_vocab.h"
#include "tensor/error.h"

namespace parallama {

const char* const kLlama3SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

// Llama 3's contractions are ASCII: spelled out, so that PCRE2's Unicode case folding cannot
// take "'ſ" (long s) for "'s", as neither Hugging Face nor llama.cpp does.
std::string pcre2_pattern(const std::string& pattern) {
  const std::string caseless = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
  if (pattern.rfind(caseless, 0) != 0) return pattern;
  return "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])" +
         pattern.substr(caseless.size());
}

struct Regex {
  explicit Regex(const std::string& pattern, const std::string& name) {
    int err = 0;
    PCRE2_SIZE at = 0;
    const std::string p = pcre2_pattern(pattern);
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error(name + ": the pre-tokenizer's pattern does not compile at offset " +
                  std::to_string(at) + " (" + reinterpret_cast<const char*>(msg) + ")");
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without JIT (unsupported CPU) it interprets
  }
  ~Regex() { pcre2_code_free(code); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  pcre2_code* code = nullptr;
};

struct MatchData {
  explicit MatchData(const pcre2_code* code)
      : md(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (!md) throw Error("out of memory for the pre-tokenizer");
  }
  ~MatchData() { pcre2_match_data_free(md); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
  pcre2_match_data* md;
};

bool is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

struct ByteBpe::Impl {
  BpeVocab v;
  std::unique_ptr<Regex> re;
  std::array<std::vector<size_t>, 256> added_at;  // added tokens by first byte, longest first
  mutable std::mutex mu;                          // guards the cache
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  void word(std::string_view w, std::vector<int32_t>& out) const;
  void merge(std::string_view w, std::vector<int32_t>& out) const;
  void plain(std::string_view text, std::vector<int32_t>& out) const;
};

ByteBpe::ByteBpe(const std::string& json_text, const std::string& config_text,
                 const std::string& name)
    : impl_(std::make_unique<Impl>()) {
  impl_->v = read_bpe_vocab(json_text, config_text, name);
  impl_->re = std::make_unique<Regex>(impl_->v.pattern, name);
  for (size_t i = 0; i < impl_->v.added.size(); ++i)
    impl_->added_at[static_cast<unsigned char>(impl_->v.added[i].content[0])].push_back(i);
  for (auto& list : impl_->added_at)
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return impl_->v.added[a].content.size() > impl_->v.added[b].content.size();
    });
}

ByteBpe::~ByteBpe() = default;

// The merges of one pre-token, by rank, lowest first and leftmost among equal ranks: symbols in
// a linked list, candidate pairs in a heap, entries made stale by a merge skipped when popped.
void ByteBpe::Impl::merge(std::string_view w, std::vector<int32_t>& out) const {
  const int n = static_cast<int>(w.size());
  std::vector<int32_t> id(n);
  std::vector<int> next(n), prev(n);
  for (int i = 0; i < n; ++i) {
    id[i] = v.byte_id[static_cast<unsigned char>(w[i])];
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  struct Cand {
    int32_t rank;
    int pos;
    int32_t left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<>> heap;
  auto consider = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    const auto it = v.merges.find(pair_key(id[pos], id[next[pos]]));
    if (it != v.merges.end()) heap.push({it->second.rank, pos, id[pos], id[next[pos]]});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const int r = next[c.pos];
    if (id[c.pos] != c.left || r < 0 || id[r] != c.right) continue;  // stale
    id[c.pos] = v.merges.at(pair_key(c.left, c.right)).merged;
    id[r] = -1;
    next[c.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = c.pos;
    consider(prev[c.pos]);
    consider(c.pos);
  }
  for (int i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
}

void ByteBpe::Impl::word(std::string_view w, std::vector<int32_t>& out) const {
  if (w.size() == 1) {
    out.push_back(v.byte_id[static_cast<unsigned char>(w[0])]);
    return;
  }
  if (v.ignore_merges)
    if (const auto it = v.by_bytes.find(std::string(w)); it != v.by_bytes.end()) {
      out.push_back(it->second);
      return;
    }
  const std::string key(w);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (const auto it = cache.find(key); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge(w, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= (size_t{1} << 18)) cache.clear();  // bounded: a long corpus of rare words
  cache.emplace(key, std::move(ids));
}

// Text without added tokens: pre-tokens by the pattern, then BPE on each.
void ByteBpe::Impl::plain(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  const MatchData m(re->code);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t at = 0;
  while (at < text.size()) {
    const int rc = pcre2_match(re->code, subject, text.size(), at, 0, m.md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      word(text.substr(at), out);  // bytes that are not UTF-8, to the end
      break;
    }
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw Error(std::string("the pre-tokenizer failed: ") + reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.md);
    size_t begin = ov[0], end = ov[1];
    if (begin > at) word(text.substr(at, begin - at), out);  // a run of bytes that are not UTF-8
    if (end == begin) {  // an empty match (a pattern that allows one): the next character alone
      end = begin + 1;
      while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    }
    word(text.substr(begin, end - begin), out);
    at = end;
  }
}

std::vector<int32_t> ByteBpe::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  const Impl& im = *impl_;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const auto& cands = im.added_at[static_cast<unsigned char>(text[i])];
    const AddedToken* hit = nullptr;
    for (size_t k : cands) {
      const AddedToken& a = im.v.added[k];
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t plain_end = i;
    if (hit->lstrip)
      while (plain_end > start && is_space(static_cast<unsigned char>(text[plain_end - 1])))
        --plain_end;
    im.plain(text.substr(start, plain_end - start), out);
    out.push_back(hit->id);
    i += hit->content.size();
    if (hit->rstrip)
      while (i < text.size() && is_space(static_cast<unsigned char>(text[i]))) ++i;
    start = i;
  }
  im.plain(text.substr(start), out);
  return out;
}

std::string ByteBpe::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary of " +
                  std::to_string(vocab_size()));
    if (impl_->v.kind[id] != TokenKind::special) out += impl_->v.bytes[id];
  }
  return out;
}

int ByteBpe::vocab_size() const {
  return static_cast<int>(impl_->v.bytes.size());
}
int32_t ByteBpe::bos_id() const {
  return impl_->v.bos;
}
int32_t ByteBpe::eos_id() const {
  return impl_->v.eos;
}
bool ByteBpe::adds_bos() const {
  return impl_->v.adds_bos;
}
size_t ByteBpe::max_token_bytes() const {
  return impl_->v.max_token_bytes;
}
std::string ByteBpe::llama_cpp_pre() const {
  if (impl_->v.pattern == kLlama3SplitPattern && impl_->v.ignore_merges) return "llama-bpe";
  if (impl_->v.pattern == kGpt2Pattern && !impl_->v.ignore_merges) return "gpt-2";
  return "";
}
std::vector<std::string> ByteBpe::spellings() const {
  return impl_->v.spelled;
}
std::vector<int32_t> ByteBpe::token_types() const {
  std::vector<int32_t> t;
  for (TokenKind k : impl_->v.kind)
    t.push_back(k == TokenKind::normal ? 1 : k == TokenKind::special ? 3 : 4);
  return t;
}
std::vector<std::string> ByteBpe::merges() const {
  std::vector<std::string> m;
  m.reserve(impl_->v.merge_list.size());
  for (const auto& [l, r] : impl_->v.merge_list)
    m.push_back(impl_->v.spelled[l] + " " + impl_->v.spelled[r]);
  return m;
}

}  // namespace parallama
