#include "model/decoder.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/flash_attention.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "tensor/error.h"

namespace parallama {

using namespace kernels;

KVCache::KVCache(const Decoder& m, int64_t sequences, int64_t capacity)
    : S_(sequences), cap_(capacity), kvd_(m.d_.KVD()) {
  if (sequences < 1 || capacity < 1 || capacity > m.cfg_.max_seq_len)
    throw Error("a KV cache of " + std::to_string(sequences) + " sequences of " +
                std::to_string(capacity) + " positions does not fit a model of max_seq_len " +
                std::to_string(m.cfg_.max_seq_len));
  const auto layers = static_cast<int64_t>(m.index_.layers.size());
  len_.assign(static_cast<size_t>(S_), 0);
  k_.assign(static_cast<size_t>(layers * S_ * cap_ * kvd_), 0.0f);
  v_.assign(k_.size(), 0.0f);
  cos_.resize(static_cast<size_t>(cap_ * (m.d_.D / 2))), sin_.resize(cos_.size());
  rope_table(cos_.data(), sin_.data(), cap_, m.d_.D, m.cfg_.rope_theta, 0, m.cfg_.rope_scaling);
}

namespace {
const LlamaConfig& whole_model(const ParamLayout& layout, int64_t rows) {
  const LlamaConfig& cfg = layout.config();
  if (cfg.shape_only) throw Error("preset '" + cfg.name + "' is a published shape for sizing only");
  const ModelShard& s = layout.shard();
  if (!s.has_embedding || !s.has_head || s.first_layer != 0 || s.last_layer != cfg.n_layers ||
      !s.later_chunks.empty())
    throw Error("generation runs every layer on each rank (use --pp 1)");
  if (rows < 1) throw Error("internal: a decoder of " + std::to_string(rows) + " rows");
  return cfg;
}
}  // namespace

Decoder::Decoder(const ParamLayout& layout, int64_t rows, comm::Group tp)
    : cfg_(whole_model(layout, rows)),
      d_(LocalDims::of(cfg_, layout.shard())),
      index_(ModelIndex::of(layout)),
      rows_(rows),
      ops_(Precision::fp32),
      tp_(std::move(tp)),
      layers_(cfg_, d_, index_, ops_, tp_) {
  if (layout.shard().tp_size != tp_.size() || layout.shard().tp_rank != tp_.rank())
    throw Error("internal: the model shard and the tensor-parallel group disagree");
  arena_.plan([&](auto&& take) {
    take_layer(acts_, take, d_, rows_, false, true);
    x_ = take(rows_ * d_.C), y_ = take(rows_ * d_.C);
    rcos_ = take(rows_ * (d_.D / 2)), rsin_ = take(rows_ * (d_.D / 2));
  });
}

void Decoder::cached_attention(const LayerActs& a, KVCache& kv,
                               const std::vector<DecodeSegment>& segs,
                               const std::vector<int64_t>& first, int layer) {
  const int64_t HD = d_.HD(), KVD = d_.KVD(), QKV = d_.QKV;
  const auto n = static_cast<int64_t>(segs.size());
  if (attn_.size() < static_cast<size_t>(omp_get_max_threads()))
    attn_.resize(static_cast<size_t>(omp_get_max_threads()));
  for (size_t g = 0; g < segs.size(); ++g) {
    const int64_t past = kv.len_[static_cast<size_t>(segs[g].seq)];
    float *kc = kv.k(layer, segs[g].seq), *vc = kv.v(layer, segs[g].seq);
    for (int64_t r = 0; r < segs[g].count; ++r) {
      const float* src = a.qkv + (first[g] + r) * QKV + HD;
      std::memcpy(kc + (past + r) * KVD, src, KVD * sizeof(float));
      std::memcpy(vc + (past + r) * KVD, src + KVD, KVD * sizeof(float));
    }
  }
  // One sequence's attention per task when there are several (each then runs single-threaded
  // inside); one sequence alone spreads its heads over the threads. Either way every row is
  // computed the same way, so the result does not depend on the threads.
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
  for (int64_t g = 0; g < n; ++g) {
    const DecodeSegment& sg = segs[static_cast<size_t>(g)];
    AttnDims ad{1, sg.count, d_.H, d_.KVH, d_.D, QKV, KVD};
    ad.past = kv.len_[static_cast<size_t>(sg.seq)];
    flash_attention_forward(a.atty + first[g] * HD, nullptr, a.qkv + first[g] * QKV,
                            kv.k(layer, sg.seq), kv.v(layer, sg.seq), ad,
                            attn_[static_cast<size_t>(omp_get_thread_num())]);
  }
}

const float* Decoder::decode(const ParamBuffer& params, KVCache& kv,
                             const std::vector<DecodeSegment>& segments, const int32_t* tokens) {
  if (kv.kvd_ != d_.KVD() || kv.len_.empty() ||
      kv.k_.size() != static_cast<size_t>(index_.layers.size() * kv.S_ * kv.cap_ * kv.kvd_))
    throw Error("internal: the KV cache was made for another model");
  int64_t rows = 0;
  std::vector<int64_t> first = {0};  // each segment's first row, then the rows in all
  std::vector<char> seen(static_cast<size_t>(kv.S_), 0);
  for (const DecodeSegment& g : segments) {
    if (g.seq < 0 || g.seq >= kv.S_ || seen[static_cast<size_t>(g.seq)] || g.count < 1)
      throw Error("internal: decode segment of sequence " + std::to_string(g.seq) + " with " +
                  std::to_string(g.count) + " tokens");
    seen[static_cast<size_t>(g.seq)] = 1;
    if (kv.len_[static_cast<size_t>(g.seq)] + g.count > kv.cap_)
      throw Error("context is full: " + std::to_string(kv.cap_) + " tokens (max_seq_len " +
                  std::to_string(cfg_.max_seq_len) + ")");
    rows += g.count;
    first.push_back(rows);
  }
  if (segments.empty()) return nullptr;
  if (rows > rows_)
    throw Error("internal: " + std::to_string(rows) + " rows in one decode call; the model takes " +
                std::to_string(rows_));
  const size_t half = static_cast<size_t>(d_.D / 2);
  size_t at = 0;
  for (const DecodeSegment& g : segments)  // each row's position in the rotary table
    for (int64_t r = 0; r < g.count; ++r, at += half) {
      const size_t pos = static_cast<size_t>(kv.len_[static_cast<size_t>(g.seq)] + r) * half;
      std::memcpy(rcos_ + at, kv.cos_.data() + pos, half * sizeof(float));
      std::memcpy(rsin_ + at, kv.sin_.data() + pos, half * sizeof(float));
    }
  for (int64_t n = 0; n < rows; ++n)
    if (tokens[n] < 0 || tokens[n] >= cfg_.vocab_size)
      throw Error("token id " + std::to_string(tokens[n]) + " is outside the vocabulary [0, " +
                  std::to_string(cfg_.vocab_size) + ")");
  const float* W = params.data();
  layers_.embed(x_, tokens, rows, W);  // (rows, C)
  const int nl = static_cast<int>(index_.layers.size());
  for (int i = 0; i < nl; ++i) {
    auto attend = [&](const LayerActs& a) {  // each row at its own position
      rope_forward(a.qkv, rcos_, rsin_, 1, rows, d_.H, d_.D, d_.QKV);
      rope_forward(a.qkv + d_.HD(), rcos_, rsin_, 1, rows, d_.KVH, d_.D, d_.QKV);
      cached_attention(a, kv, segments, first, i);
    };
    layers_.forward(acts_, index_.layers[static_cast<size_t>(i)], x_, y_, W, rows, attend);
    std::swap(x_, y_);
  }
  for (const DecodeSegment& g : segments) kv.len_[static_cast<size_t>(g.seq)] += g.count;
  return head(x_, first, W);
}

const float* Decoder::head(const float* x, const std::vector<int64_t>& first, const float* W) {
  const int64_t S = static_cast<int64_t>(first.size()) - 1, C = d_.C, vocab = cfg_.vocab_size;
  auto fit = [](std::vector<float>& v, int64_t n) {
    if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  };
  fit(hin_, S * C), fit(hn_, S * C), fit(rstd_, S), fit(logits_, S * vocab);
  for (int64_t g = 0; g < S; ++g)  // the last row of each segment only
    std::memcpy(hin_.data() + g * C, x + (first[static_cast<size_t>(g) + 1] - 1) * C,
                C * sizeof(float));
  rmsnorm_forward(hn_.data(), rstd_.data(), hin_.data(), W + index_.norm, S, C, cfg_.norm_eps);
  if (tp_.size() == 1) {
    gemm(false, true, S, d_.V, C, 1.0f, hn_.data(), C, W + index_.head, C, 0.0f, logits_.data(),
         d_.V);
    return logits_.data();
  }
  fit(local_, S * d_.V), fit(gathered_, S * vocab);
  gemm(false, true, S, d_.V, C, 1.0f, hn_.data(), C, W + index_.head, C, 0.0f, local_.data(), d_.V);
  tp_.gather_vocab(local_.data(), S, vocab, gathered_.data(), logits_.data());
  return logits_.data();
}

}  // namespace parallama
