// The planner (src/plan/plan.h) against published arithmetic and against what the program
// allocates: the ZeRO paper's bytes per parameter and its Figure 1 example, parameter counts per
// rank against the model's, activation bytes against a real Llama, micro-batch slots against
// the schedules' rules, and traffic against the Megatron communication pattern counted by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "model/llama.h"
#include "model/params.h"
#include "plan/plan.h"
#include "tensor/error.h"

namespace parallama {
namespace {

// Rajbhandari et al. 2020 (ZeRO), section 3.1 and Figure 1: mixed-precision Adam keeps 2Ψ bytes
// of fp16 parameters, 2Ψ of fp16 gradients and KΨ of optimizer state with K = 12 (fp32
// parameters, momentum and variance); ZeRO-1 (P_os) keeps 4Ψ + KΨ/Nd, ZeRO-2 (P_os+g)
// 2Ψ + (2 + K)Ψ/Nd. Figure 1: Ψ = 7.5B, Nd = 64: 120 GB, 31.4 GB, 16.6 GB.
TEST(Plan, ZeroPaperBytesPerParameter) {
  const double psi = 7.5e9, nd = 64, K = 12;
  const StateBytes base = model_state_bytes(psi, Precision::bf16, 2, 0, 64);
  const StateBytes os = model_state_bytes(psi, Precision::bf16, 2, 1, 64);
  const StateBytes osg = model_state_bytes(psi, Precision::bf16, 2, 2, 64);
  EXPECT_DOUBLE_EQ(base.total(), (2 + 2 + K) * psi);
  EXPECT_DOUBLE_EQ(base.total() / psi, 16.0);
  EXPECT_DOUBLE_EQ(os.total(), 2 * psi + 2 * psi + K * psi / nd);
  EXPECT_DOUBLE_EQ(osg.total(), 2 * psi + (2 + K) * psi / nd);
  // The figures as the paper prints them (GB, rounded to 0.1).
  EXPECT_NEAR(base.total() / 1e9, 120.0, 0.05);
  EXPECT_NEAR(os.total() / 1e9, 31.4, 0.05);
  EXPECT_NEAR(osg.total() / 1e9, 16.6, 0.05);
  // Parameters are never sharded by ZeRO-1/2; gradients only by stage 2.
  EXPECT_DOUBLE_EQ(os.params, 2 * psi);
  EXPECT_DOUBLE_EQ(os.grads, 2 * psi);
  EXPECT_DOUBLE_EQ(osg.grads, 2 * psi / nd);
}

TEST(Plan, Fp32AndSgdBytesPerParameter) {
  // Training here today: fp32 parameters and gradients (4 + 4) and AdamW's two fp32 moments (8):
  // also 16 bytes per parameter, split differently.
  const StateBytes adamw = model_state_bytes(1000, Precision::fp32, 2, 0, 8);
  EXPECT_DOUBLE_EQ(adamw.params, 4000);
  EXPECT_DOUBLE_EQ(adamw.grads, 4000);
  EXPECT_DOUBLE_EQ(adamw.optimizer, 8000);
  EXPECT_DOUBLE_EQ(model_state_bytes(1000, Precision::fp32, 2, 1, 8).optimizer, 1000);
  // SGD with momentum: one moment; in bf16 beside the fp32 master copy.
  EXPECT_DOUBLE_EQ(model_state_bytes(1000, Precision::fp32, 1, 0, 1).total(), 12000);
  EXPECT_DOUBLE_EQ(model_state_bytes(1000, Precision::bf16, 1, 0, 1).total(), 2000 + 2000 + 8000);
}

PlanInput input(const LlamaConfig& m, int dp, int tp, int pp, int micro = 4) {
  PlanInput in;
  in.model = m;
  in.shape.dp = dp, in.shape.tp = tp, in.shape.pp = pp;
  in.batch = 2, in.seq_len = 16, in.micro_batches = micro;
  in.shape.seq_len = 16;
  return in;
}

// Every (stage, tp rank) together holds the whole model once (plus a last stage's tied copy of
// the embedding, and the replicated norm weights on every tp rank), up to the 64-byte alignment
// of each tensor group.
TEST(Plan, ParametersPerRankAddUpToTheModel) {
  for (const char* preset : {"tiny", "kjv-small", "bench15m", "llama3-8b"})
    for (auto [tp, pp] : {std::pair{1, 1}, {2, 1}, {1, 2}, {2, 2}}) {
      LlamaConfig m = llama_preset(preset);
      const Plan plan = make_plan(input(m, 1, tp, pp), Device{});
      double sum = 0;
      for (const RankGroup& g : plan.groups) {
        sum += static_cast<double>(g.numel) * static_cast<double>(g.ranks.size());
        EXPECT_DOUBLE_EQ(g.state.params, 4.0 * static_cast<double>(g.numel));
      }
      double expected = static_cast<double>(m.num_params());
      if (m.tie_embeddings && pp > 1) expected += static_cast<double>(m.vocab_size) * m.dim;
      expected += (tp - 1.0) * (2 * m.n_layers + 1) * m.dim;    // norm weights: on every tp rank
      const double padding = 16.0 * (9 * m.n_layers + 4) * tp;  // floats, at most
      EXPECT_GE(sum, expected) << preset << " tp " << tp << " pp " << pp;
      EXPECT_LE(sum, expected + padding) << preset << " tp " << tp << " pp " << pp;
      EXPECT_EQ(static_cast<int>(plan.group_of_rank.size()), tp * pp);
      for (int g : plan.group_of_rank) EXPECT_GE(g, 0);
    }
}

// The planner's activation bytes are what a real Llama allocates: one slot per chunk up front,
// one more for each micro-batch held at once.
TEST(Plan, ActivationsMatchTheModel) {
  LlamaConfig m = llama_preset("tiny");
  m.n_layers = 4;
  const int64_t B = 2, T = 16, N = B * T;
  const ModelShard whole = ModelShard::whole(m);
  const ParamLayout layout(m, whole);
  ParamBuffer params(layout);
  init_params(params, 1);
  Llama model(layout, B, T);
  EXPECT_EQ(static_cast<double>(model.activation_bytes()),
            activation_bytes(m, whole, B, T, {1}, Recompute::none, Precision::fp32));
  std::vector<int32_t> tokens(N), targets(N);
  for (int64_t i = 0; i < N; ++i) tokens[i] = static_cast<int32_t>(i % 50), targets[i] = 7;
  for (int micro = 0; micro < 3; ++micro)  // three micro-batches in flight: three slots
    model.forward_chunk(params, 0, micro, tokens.data(), targets.data(), nullptr);
  EXPECT_EQ(static_cast<double>(model.activation_bytes()),
            activation_bytes(m, whole, B, T, {3}, Recompute::none, Precision::fp32));

  // A last interleaved stage: two chunks, the second with the head.
  MeshShape sh;
  sh.pp = 2, sh.pp_virtual = 2, sh.seq_len = 16;
  const ModelShard last = mesh_shard(m, sh, {0, 0, 1});
  ASSERT_EQ(last.chunks().size(), 2u);
  const ParamLayout last_layout(m, last);
  Llama stage(last_layout, B, T);
  EXPECT_EQ(static_cast<double>(stage.activation_bytes()),
            activation_bytes(m, last, B, T, {1, 1}, Recompute::none, Precision::fp32));

  // With recompute, what the model allocates for three micro-batches in flight.
  for (Recompute rc : {Recompute::attention, Recompute::full}) {
    Llama again(layout, B, T, {}, rc);
    for (int micro = 0; micro < 3; ++micro)
      again.forward_chunk(params, 0, micro, tokens.data(), targets.data(), nullptr);
    EXPECT_EQ(static_cast<double>(again.activation_bytes()),
              activation_bytes(m, whole, B, T, {3}, rc, Precision::fp32))
        << recompute_name(rc);
  }
}

// Recompute keeps per micro-batch only each layer's input, (B, T, C) floats per layer (and the
// chunk's output).
TEST(Plan, RecomputeKeepsLayerInputs) {
  const LlamaConfig m = llama_preset("bench15m");
  MeshShape sh;
  sh.pp = 2, sh.seq_len = 64;
  const ModelShard first = mesh_shard(m, sh, {0, 0, 0});  // no head
  const int64_t B = 2, T = 64, nl = first.last_layer - first.first_layer;
  auto rec = [&](int slots) {
    return activation_bytes(m, first, B, T, {slots}, Recompute::full, Precision::fp32);
  };
  auto keep = [&](int slots) {
    return activation_bytes(m, first, B, T, {slots}, Recompute::none, Precision::fp32);
  };
  EXPECT_DOUBLE_EQ(rec(5) - rec(4), 4.0 * (nl + 1) * B * T * m.dim);
  EXPECT_LT(rec(4), keep(4));
  EXPECT_DOUBLE_EQ(activation_bytes(m, first, B, T, {4}, Recompute::full, Precision::bf16),
                   rec(4) / 2);
}

TEST(Plan, SlotsFollowTheSchedules) {
  for (int pp : {1, 2, 4})
    for (int m : {1, 3, 8})
      for (int s = 0; s < pp; ++s) {
        const auto gpipe = slots_per_chunk(PipeSchedule::GPipe, pp, s, m, 1);
        const auto one = slots_per_chunk(PipeSchedule::OneFOneB, pp, s, m, 1);
        EXPECT_EQ(gpipe, std::vector<int>{pp == 1 ? 1 : m});
        EXPECT_EQ(one, std::vector<int>{pp == 1 ? 1 : std::min(pp - s, m)});
      }
  // Interleaved: every chunk holds at least one, the first stage the most.
  const auto first = slots_per_chunk(PipeSchedule::Interleaved, 4, 0, 8, 2);
  const auto last = slots_per_chunk(PipeSchedule::Interleaved, 4, 3, 8, 2);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_GE(first[0] + first[1], last[0] + last[1]);
  EXPECT_GE(*std::min_element(last.begin(), last.end()), 1);
}

// Traffic by hand: per micro-batch and layer, 2 all-reduces of (B, T, C) forward and 2 backward
// over tp; the embedding's forward sum; the loss's (max, sum, target) sums of N floats in fp32
// and the head's input-gradient sum. A ring all-reduce moves 2(n-1)/n of the buffer each way.
TEST(Plan, TrafficCountedByHand) {
  const LlamaConfig m = llama_preset("bench15m");
  const int tp = 2, micro = 3;
  const Plan plan = make_plan(input(m, 1, tp, 1, micro), Device{});
  ASSERT_EQ(plan.groups.size(), 1u);
  const double N = 2 * 16, C = m.dim, ring = 2.0 * (tp - 1) / tp, L = m.n_layers;
  const double per_micro = ring * 4 * (4 * L * N * C + N * C + 3 * N + N * C);
  EXPECT_DOUBLE_EQ(plan.groups[0].tp_bytes, 2 * micro * per_micro);  // sent + received
  EXPECT_EQ(plan.groups[0].dp_bytes, 0);
  EXPECT_EQ(plan.groups[0].pp_bytes, 0);

  // Two stages: each sends (and receives) one (B, T, C) message with a 16-byte stamp per
  // micro-batch; dp 4: the gradient all-reduce, or ZeRO's reduce-scatter and all-gather.
  PlanInput in = input(m, 4, 1, 2, micro);
  const Plan pp = make_plan(in, Device{});
  for (const RankGroup& g : pp.groups) {
    EXPECT_DOUBLE_EQ(g.pp_bytes, 2 * micro * (4 * N * C + 16));
    EXPECT_DOUBLE_EQ(g.dp_bytes, 2 * 2.0 * 3 / 4 * 4 * static_cast<double>(g.numel));
  }
  in.zero = 1;
  for (const RankGroup& g : make_plan(in, Device{}).groups)
    EXPECT_DOUBLE_EQ(g.dp_bytes, 2 * (3.0 / 4 * 4 + 3.0 / 4 * 4) * static_cast<double>(g.numel));
}

// ZeRO on a real layout: the shards are the buckets' pieces, about 1/dp of the whole.
TEST(Plan, ZeroShardsOnALayout) {
  const LlamaConfig m = llama_preset("llama3-8b");
  PlanInput in = input(m, 8, 8, 4);
  const Plan plain = make_plan(in, Device{});
  in.zero = 1;
  const Plan one = make_plan(in, Device{});
  in.zero = 2;
  const Plan two = make_plan(in, Device{});
  for (size_t i = 0; i < plain.groups.size(); ++i) {
    const double numel = static_cast<double>(plain.groups[i].numel);
    EXPECT_NEAR(one.groups[i].state.optimizer, 8 * numel / 8, 1e-3 * numel);
    EXPECT_DOUBLE_EQ(one.groups[i].state.grads, 4 * numel);
    EXPECT_NEAR(two.groups[i].state.grads, 4 * numel / 8, 1e-3 * numel);
    EXPECT_DOUBLE_EQ(two.groups[i].grads_in_backward, 4 * numel);
    EXPECT_EQ(two.groups[i].activations, plain.groups[i].activations);
  }
  EXPECT_LT(two.groups[two.largest].memory(), one.groups[one.largest].memory());
}

TEST(Plan, BubbleStepTimeAndMfu) {
  const LlamaConfig m = llama_preset("llama3-8b");
  PlanInput in = input(m, 2, 8, 4, 16);
  in.seq_len = in.shape.seq_len = 8192;
  in.batch = 1;
  in.precision = Precision::bf16;
  in.recompute = Recompute::full;
  const Plan a = make_plan(in, Device{});
  EXPECT_DOUBLE_EQ(a.bubble, 3.0 / (16 + 3));
  EXPECT_GT(a.mfu, 0);
  EXPECT_LT(a.mfu, 1);
  EXPECT_NEAR(a.mfu, a.model_flops / (64 * a.step_s * 989e12), 1e-12);
  EXPECT_DOUBLE_EQ(a.tokens_per_step, 2.0 * 16 * 8192);
  // The largest group has the most memory.
  for (const RankGroup& g : a.groups) EXPECT_LE(g.memory(), a.groups[a.largest].memory());
  // A faster device and faster links: a shorter step.
  Device fast;
  fast.tflops = 2 * 989, fast.link_gbps = 800, fast.tp_link_gbps = 7200;
  EXPECT_LT(make_plan(in, fast).step_s, a.step_s);
  // Interleaving shrinks the bubble.
  in.schedule = PipeSchedule::Interleaved;
  in.shape.pp_virtual = 2;
  EXPECT_DOUBLE_EQ(make_plan(in, Device{}).bubble, 3.0 / (2 * 16 + 3));
  // An impossible layout is an Error, as for training.
  in.shape.tp = 3;
  EXPECT_THROW(make_plan(in, Device{}), Error);
}

}  // namespace
}  // namespace parallama
