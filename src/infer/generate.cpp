#include "infer/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <omp.h>

#include "tensor/error.h"

namespace parallama {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int64_t capacity(const LlamaConfig& c, int64_t context) {
  return context > 0 ? std::min<int64_t>(context, c.max_seq_len) : c.max_seq_len;
}

// The most tokens a call of the model takes.
int64_t rows_for(int64_t sequences, int64_t rows) {
  return rows > 0 ? std::max(rows, sequences) : std::max<int64_t>(sequences, 128);
}

// At most one thread per row while it lives: a decode step of one sequence is a chain of tiny
// kernels, and more threads than rows spend longer meeting at each kernel's barrier than they
// save (5× slower with two threads than one, at one row, on a 2-core machine). The generator
// decides this for its calls; the model and its kernels never set the thread count.
class ThreadCap {
 public:
  explicit ThreadCap(int64_t rows) {
    if (rows < keep_) omp_set_num_threads(static_cast<int>(rows));
  }
  ~ThreadCap() { omp_set_num_threads(keep_); }
  ThreadCap(const ThreadCap&) = delete;
  ThreadCap& operator=(const ThreadCap&) = delete;

 private:
  int keep_ = omp_get_max_threads();
};

}  // namespace

Generator::Generator(const ParamLayout& layout, const ParamBuffer& params, comm::Group tp,
                     int64_t context, int64_t sequences, int64_t rows)
    : params_(params),
      V_(layout.config().vocab_size),
      model_(layout, rows_for(sequences, rows), std::move(tp)),
      cache_(model_, sequences, capacity(layout.config(), context)) {}

const float* Generator::decode(const std::vector<DecodeSegment>& seg, const int32_t* tokens) {
  int64_t rows = 0;
  for (const DecodeSegment& g : seg) rows += g.count;
  const ThreadCap cap(std::max<int64_t>(rows, 1));
  return model_.decode(params_, cache_, seg, tokens);
}

const float* Generator::feed(int32_t token) {
  return decode({{0, 1}}, &token);
}

int32_t Generator::sample(const float* logits, const SampleConfig& sc, std::mt19937_64& rng) {
  const int64_t V = sc.vocab > 0 ? std::min(V_, sc.vocab) : V_;
  if (sc.temperature <= 0.0f)
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  const float mx = *std::max_element(logits, logits + V);
  cand_.resize(V);
  double sum = 0.0;
  for (int64_t v = 0; v < V; ++v) {
    const float p = std::exp((logits[v] - mx) / sc.temperature);
    cand_[v] = {p, static_cast<int32_t>(v)};
    sum += p;
  }
  std::sort(cand_.begin(), cand_.end(), [](auto& a, auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  double mass = 0.0;
  size_t keep = 0;
  while (keep < cand_.size() && (keep == 0 || mass < sc.top_p * sum)) mass += cand_[keep++].first;
  const double r = std::uniform_real_distribution<double>(0.0, mass)(rng);
  double acc = 0.0;
  for (size_t i = 0; i < keep; ++i)
    if ((acc += cand_[i].first) >= r) return cand_[i].second;
  return cand_[keep - 1].second;
}

std::vector<int32_t> Generator::generate(const std::vector<int32_t>& prompt, const SampleConfig& sc,
                                         int32_t eos_id) {
  return generate_batch({prompt}, {sc}, eos_id)[0].tokens;
}

std::vector<Generated> Generator::generate_batch(const std::vector<std::vector<int32_t>>& prompts,
                                                 const std::vector<SampleConfig>& sc,
                                                 int32_t eos_id) {
  const auto n = static_cast<int64_t>(prompts.size());
  if (n > cache_.sequences() || sc.size() != prompts.size())
    throw Error("internal: a batch of " + std::to_string(n) + " prompts for " +
                std::to_string(cache_.sequences()) + " sequences");
  for (const auto& p : prompts) {
    if (p.empty()) throw Error("the prompt must hold at least one token");
    if (static_cast<int64_t>(p.size()) >= cache_.capacity())
      throw Error("the prompt has " + std::to_string(p.size()) +
                  " tokens; the model's context is " + std::to_string(cache_.capacity()));
  }
  const double t0 = now();
  std::vector<Generated> out(static_cast<size_t>(n));
  std::vector<std::mt19937_64> rng;
  for (const SampleConfig& c : sc) rng.emplace_back(c.seed);
  for (int64_t s = 0; s < n; ++s) cache_.clear(s);
  std::vector<char> live(static_cast<size_t>(n), 1);
  std::vector<int32_t> next(static_cast<size_t>(n));  // the token each sequence feeds next
  std::vector<DecodeSegment> seg;
  std::vector<int32_t> rows;
  // The logits of sequence s's last fed token: sample it, and stop it or queue the token.
  auto take = [&](int64_t s, const float* logits) {
    const auto i = static_cast<size_t>(s);
    Generated& g = out[i];
    const int32_t t = static_cast<int>(g.tokens.size()) < sc[i].max_tokens
                          ? sample(logits, sc[i], rng[i])
                          : eos_id;
    if (t == eos_id) {
      live[i] = 0;
    } else {
      g.tokens.push_back(t);
      next[i] = t;
      // With the context full, or max_tokens reached, the token is not fed.
      if (cache_.length(s) >= cache_.capacity() ||
          static_cast<int>(g.tokens.size()) >= sc[i].max_tokens)
        live[i] = 0;
    }
    if (!live[i]) g.seconds = now() - t0;
  };
  // The prompts, in calls of at most max_rows tokens; a long one is split over several.
  const int64_t cap = model_.max_rows();
  int64_t s = 0, fed = 0;  // the next prompt token to feed: prompt s, from position fed
  while (s < n) {
    seg.clear(), rows.clear();
    std::vector<int64_t> done;  // sequences whose prompt this call completes
    while (s < n && static_cast<int64_t>(rows.size()) < cap) {
      const auto& p = prompts[static_cast<size_t>(s)];
      const int64_t k = std::min<int64_t>(static_cast<int64_t>(p.size()) - fed,
                                          cap - static_cast<int64_t>(rows.size()));
      seg.push_back({s, k});
      rows.insert(rows.end(), p.begin() + fed, p.begin() + fed + k);
      fed += k;
      if (fed == static_cast<int64_t>(p.size())) done.push_back(s), ++s, fed = 0;
    }
    const float* logits = decode(seg, rows.data());
    for (size_t g = 0; g < seg.size(); ++g)
      if (std::find(done.begin(), done.end(), seg[g].seq) != done.end())
        take(seg[g].seq, logits + static_cast<int64_t>(g) * V_);
  }
  // Then one token a step for every sequence still going.
  for (;;) {
    seg.clear(), rows.clear();
    for (int64_t q = 0; q < n; ++q)
      if (live[static_cast<size_t>(q)]) seg.push_back({q, 1}), rows.push_back(next[q]);
    if (seg.empty()) break;
    const float* logits = decode(seg, rows.data());
    for (size_t g = 0; g < seg.size(); ++g) take(seg[g].seq, logits + static_cast<int64_t>(g) * V_);
  }
  return out;
}

}  // namespace parallama
