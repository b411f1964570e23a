#include "model/llama.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/cross_entropy.h"
#include "kernels/rope.h"
#include "tensor/error.h"
#include "tensor/profile.h"

namespace parallama {

namespace {
const ModelShard& checked_shard(const ParamLayout& layout, const comm::Group& tp, int64_t B,
                                int64_t T) {
  const ModelShard& shard = layout.shard();
  const LlamaConfig& cfg = layout.config();
  if (shard.tp_size != tp.size() || shard.tp_rank != tp.rank())
    throw Error("internal: the model shard is tensor-parallel rank " +
                std::to_string(shard.tp_rank) + " of " + std::to_string(shard.tp_size) +
                " but its group is rank " + std::to_string(tp.rank()) + " of " +
                std::to_string(tp.size()));
  if (cfg.shape_only)
    throw Error("preset '" + cfg.name +
                "' is a published shape for sizing only and is not "
                "trained here; pick tiny, kjv-small or bench15m");
  if (B <= 0 || T <= 0) throw Error("batch size and sequence length must be positive");
  if (T > cfg.max_seq_len)
    throw Error("sequence length " + std::to_string(T) + " exceeds the model's max_seq_len " +
                std::to_string(cfg.max_seq_len));
  return shard;
}
}  // namespace

Llama::Llama(const ParamLayout& layout, int64_t B, int64_t T, comm::Group tp, Recompute recompute,
             Precision precision)
    : cfg_(layout.config()),
      d_(LocalDims::of(cfg_, checked_shard(layout, tp, B, T))),
      index_(ModelIndex::of(layout)),
      rows_{B, T},
      recompute_(recompute),
      ops_(precision),
      tp_(std::move(tp)),
      layers_(cfg_, d_, index_, ops_, tp_),
      gemm_weights_(index_.gemm_weights(d_)),
      slots_(static_cast<int>(index_.chunks.size())) {
  const int64_t N = rows_.N(), C = d_.C, HD = d_.HD(), F = d_.F;
  const bool lowp = ops_.lowp();
  scratch_.plan([&](auto&& take) {
    LayerActs& a = ws_.shared;
    if (recompute_ == Recompute::full) take_layer(a, take, d_, N, lowp, false);
    if (recompute_ != Recompute::none) a.lse = take(N * d_.H), a.atty = take(N * HD);
    ws_.cos = take(T * d_.D / 2), ws_.sin = take(T * d_.D / 2);
    ws_.dres = take(N * C), ws_.dln = take(N * C), ws_.dqkv = take(N * d_.QKV);
    ws_.datty = take(N * HD), ws_.dgu = take(N * 2 * F), ws_.dact = take(N * F);
    if (lowp) {  // 16-bit operands of the GEMMs
      const int64_t widest = std::max({C, 2 * F, d_.QKV, HD});
      ws_.xh = as_half(take(halves(N * HD)));
      ws_.dyh = as_half(take(halves(N * widest)));
    }
  });
  ops_.reserve(layout.total());
  kernels::rope_table(ws_.cos, ws_.sin, T, d_.D, cfg_.rope_theta, 0, cfg_.rope_scaling);
  for (int c = 0; c < num_chunks(); ++c) slots_.release(acquire(c, 0));  // one slot each up front
  reset_peak();
}

Llama::~Llama() = default;

Slot& Llama::acquire(int c, int micro) {
  return slots_.acquire(c, micro, [&](Slot& s) {
    // A new slot: this chunk's layers, plus the head's buffers for the head chunk.
    const ModelIndex::Chunk& ch = index_.chunks[c];
    const int64_t N = rows_.N(), C = d_.C;
    const int nl = ch.last - ch.first;
    const bool lowp = ops_.lowp();
    s.arena.plan([&](auto&& take) {
      s.res.assign(nl + 1, nullptr);
      s.acts.assign(recompute_ == Recompute::full ? 0 : nl, {});
      for (int l = 0; l <= nl; ++l) s.res[l] = take(N * C);
      // With attention recompute, its output and lse are shared.
      for (auto& a : s.acts) take_layer(a, take, d_, N, lowp, recompute_ == Recompute::none);
      if (ch.head) {
        HeadActs& h = s.head;
        if (lowp)
          h.lnfh = as_half(take(halves(N * C)));
        else
          h.lnf = take(N * C);
        h.rstdf = take(N), h.logits = take(N * d_.V);
        h.ce_stats = take(2 * N), h.ce_part = take(2 * N), h.ce_max = take(N);
        h.losses = take(N);
      }
    });
    s.tokens.resize(N);
    s.targets.resize(N);
  });
}

void Llama::discard_chunk(int c, int micro) {
  slots_.release(slots_.find(c, micro));
}

size_t Llama::activation_bytes() const {
  return scratch_.floats() * sizeof(float) + slots_.bytes();
}

const float* Llama::logits() const {
  return last_logits_;
}

void Llama::check_ids(const int32_t* ids, bool targets) const {
  for (int64_t n = 0; n < rows_.N(); ++n) {
    const int32_t id = ids[n];
    if (targets && id == kernels::kIgnoreIndex) continue;
    if (id < 0 || id >= cfg_.vocab_size)
      throw Error(std::string(targets ? "target" : "token") + " id " + std::to_string(id) +
                  " at batch row " + std::to_string(n / rows_.T) + ", position " +
                  std::to_string(n % rows_.T) + " is outside the vocabulary [0, " +
                  std::to_string(cfg_.vocab_size) +
                  "); the data was made with another tokenizer or vocab_size is too small");
  }
}

float Llama::forward(const ParamBuffer& params, const int32_t* tokens, const int32_t* targets,
                     bool backward_follows) {
  if (num_chunks() != 1 || !chunk_has_embedding(0) || !chunk_has_head(0))
    throw Error("internal: forward() runs a whole model; a pipeline stage runs forward_chunk()");
  slots_.release_if_held(0, 0);  // a forward without backward (evaluation) leaves its slot behind
  run_chunk(params, 0, 0, tokens, targets, nullptr, !backward_follows);
  return valid_ ? static_cast<float>(loss_sum_ / valid_) : 0.0f;
}

void Llama::backward(const ParamBuffer& params, ParamBuffer& grads, float grad_scale,
                     const std::function<void(int64_t)>& on_final) {
  backward_chunk(params, grads, 0, 0, grad_scale, nullptr, on_final);
}

const float* Llama::forward_chunk(const ParamBuffer& params, int c, int micro,
                                  const int32_t* tokens, const int32_t* targets, const float* in) {
  return run_chunk(params, c, micro, tokens, targets, in, micro == kForwardOnly);
}

Layers::Attend Llama::attend() {
  return [this](const LayerActs& a) { layers_.attend(a, rows_, ws_); };
}

LayerActs Llama::acts_of(const Slot& s, int i) const {
  if (recompute_ == Recompute::full) return ws_.shared;
  LayerActs a = s.acts[i];
  if (recompute_ == Recompute::attention) a.lse = ws_.shared.lse, a.atty = ws_.shared.atty;
  return a;
}

const float* Llama::run_chunk(const ParamBuffer& params, int c, int micro, const int32_t* tokens,
                              const int32_t* targets, const float* in, bool keep_logits) {
  const ModelIndex::Chunk& ch = index_.chunks[c];
  const int64_t N = rows_.N();
  if (ch.embedding) check_ids(tokens, false);
  if (ch.head) check_ids(targets, true);
  Slot& s = acquire(c, micro);
  if (ops_.lowp() && c == 0 && (micro == 0 || micro == kForwardOnly)) {  // a step's first forward
    prof::PartScope part(prof::Part::optimizer);  // the weights' copy: part of the update
    ops_.refresh(params.data(), gemm_weights_);
  }
  std::memcpy(s.tokens.data(), tokens, N * sizeof(int32_t));
  std::memcpy(s.targets.data(), targets, N * sizeof(int32_t));
  const float* W = params.data();
  if (ch.embedding) {
    prof::PartScope part(prof::Part::embedding);
    layers_.embed(s.res[0], s.tokens.data(), N, W);
  } else {
    std::memcpy(s.res[0], in, N * d_.C * sizeof(float));  // the previous stage's output
  }
  const Layers::Attend att = attend();
  for (int i = 0; i < ch.last - ch.first; ++i)
    layers_.forward(acts_of(s, i), index_.layers[ch.first + i], s.res[i], s.res[i + 1], W, N, att,
                    ws_.xh);
  if (!ch.head) return s.res[ch.last - ch.first];
  prof::PartScope part(prof::Part::head);
  layers_.head_forward(s.head, s.res.back(), s.targets.data(), N, W, keep_logits);
  last_logits_ = s.head.logits;
  valid_ = 0;
  loss_sum_ = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    if (s.targets[n] == kernels::kIgnoreIndex) continue;
    ++valid_;
    loss_sum_ += s.head.losses[n];
  }
  return nullptr;
}

const float* Llama::backward_chunk(const ParamBuffer& params, ParamBuffer& grads, int c, int micro,
                                   float grad_scale, const float* dout,
                                   const std::function<void(int64_t)>& on_final) {
  auto final_from = [&](int64_t offset) {
    if (on_final) on_final(offset);
  };
  const ModelIndex::Chunk& ch = index_.chunks[c];
  Slot& s = slots_.find(c, micro);
  const float* W = params.data();
  float* G = grads.data();
  const int64_t N = rows_.N();
  const bool has_layers = ch.last > ch.first;
  Operand dres;  // ws_.dres as the next product's operand

  if (ch.head) {
    prof::PartScope part(prof::Part::head);
    // An untied head (after the final norm in the layout) is final as soon as its weight
    // gradient is: data parallelism sends it while the input gradient computes.
    dres = layers_.head_backward(ws_, s.head, s.res.back(), s.targets.data(), grad_scale, N, W, G,
                                 has_layers, [&] {
                                   if (index_.head > index_.norm) final_from(index_.head);
                                 });
    // The layout keeps the final norm and the head (untied, or a last stage's tied copy) after
    // every layer; a tied embedding at offset 0 is completed last.
    final_from(index_.norm);
  } else {
    std::memcpy(ws_.dres, dout, N * d_.C * sizeof(float));  // the next stage's input gradient
    if (has_layers) dres = ops_.operand(ws_.dres, N * d_.C, ws_.dyh);
  }
  for (int i = ch.last - ch.first - 1; i >= 0; --i) {
    const LayerActs a = acts_of(s, i);
    const LayerParams& p = index_.layers[ch.first + i];
    if (recompute_ == Recompute::full)  // the layer again, from its input
      layers_.forward(a, p, s.res[i], nullptr, W, N, attend(), ws_.xh);
    if (recompute_ == Recompute::attention) {  // the attention output and its lse again
      prof::PartScope part(prof::Part::attention);
      layers_.attention_forward(a, rows_, ws_);
    }
    dres = layers_.backward(ws_, a, p, s.res[i], dres, rows_, W, G, i > 0);
    final_from(p.ln1);
  }
  const float* din = ws_.dres;
  if (ch.embedding) {
    prof::PartScope part(prof::Part::embedding);
    layers_.embed_backward(G, ws_.dres, s.tokens.data(), N);
    final_from(0);
    din = nullptr;
  }
  slots_.release(s);
  return din;
}

}  // namespace parallama
