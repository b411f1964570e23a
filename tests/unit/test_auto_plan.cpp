// The planner's time model term by term against hand-computed cases, machine profiles read and
// refused, and the automatic layout search.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "plan/auto_layout.h"
#include "plan/profile.h"
#include "scratch_dir.h"
#include "test_util.h"

namespace parallama {

namespace {

Device curve_device() {
  Device d;
  d.gemm_gflops = {{100, 10}, {1000, 100}};
  d.memory_gbps = 10;
  return d;
}

}  // namespace

TEST(TimeModel, GemmRateFollowsTheCurveLogLinearly) {
  const Device d = curve_device();
  EXPECT_DOUBLE_EQ(gemm_rate(d, Precision::fp32, 10, 10, 10), 10e9);      // below: flat
  EXPECT_DOUBLE_EQ(gemm_rate(d, Precision::fp32, 1e4, 1e4, 1e4), 100e9);  // beyond: flat
  // Size sqrt(100 · 1000) (M·N·K its cube), half way on the log scale: half way between the rates.
  const double mid = std::sqrt(1e5);
  EXPECT_NEAR(gemm_rate(d, Precision::fp32, mid, mid, mid), 55e9, 1e3);
  Device flat;  // no curve: the peak times the efficiency
  flat.tflops = 2, flat.efficiency = 0.5;
  EXPECT_DOUBLE_EQ(gemm_rate(flat, Precision::bf16, 7, 8, 9), 1e12);
}

TEST(TimeModel, MatmulSecondsCountEveryProductAtItsRate) {
  LlamaConfig m = llama_preset("tiny");
  const ModelShard whole = ModelShard::whole(m);
  Device d;  // one rate for every shape: seconds = FLOPs / rate
  d.gemm_gflops = {{1, 50}, {2, 50}};
  const double B = 2, T = 16, N = B * T, C = m.dim, D = m.head_dim(), H = m.n_heads;
  const double KVH = m.n_kv_heads, F = m.ffn_dim, V = m.vocab_size, L = m.n_layers;
  const double layer = 2 * N * ((H + 2 * KVH) * D * C + C * H * D + 2 * F * C + C * F);
  const double attention = B * H * (2 * T * T * D + 2 * T * D * T) / 2;
  const double fwd = L * (layer + attention);
  const double want = 3 * (fwd + 2 * N * V * C) / 50e9;
  EXPECT_NEAR(matmul_seconds(d, Precision::fp32, m, whole, 2, 16, Recompute::none), want,
              want * 1e-12);
  EXPECT_NEAR(matmul_seconds(d, Precision::fp32, m, whole, 2, 16, Recompute::full),
              want + fwd / 50e9, want * 1e-12);
  EXPECT_NEAR(matmul_seconds(d, Precision::fp32, m, whole, 2, 16, Recompute::attention),
              want + L * attention / 50e9, want * 1e-12);
}

TEST(TimeModel, StreamingAndOptimizerAtTheMemoryBandwidth) {
  LlamaConfig m = llama_preset("tiny");
  const ModelShard whole = ModelShard::whole(m);
  const Device d = curve_device();  // 10 GB/s
  const double N = 2 * 16, C = m.dim, D = m.head_dim(), H = m.n_heads, KVH = m.n_kv_heads;
  const double F = m.ffn_dim, V = m.vocab_size, L = m.n_layers;
  const double bytes =
      N * (L * (22 * C + 4 * (H + KVH) * D + 8 * F) * 4 + 5 * C * 4 + 3 * V * 4 + 3 * C * 4);
  EXPECT_NEAR(stream_seconds(d, Precision::fp32, m, whole, 2, 16), bytes / 10e9, 1e-15);
  // AdamW in fp32: parameters and two moments read and written (24 bytes), the gradient read and
  // zeroed (8): 32 bytes a parameter; bf16 adds the 16-bit copy's 2 and halves the gradient's.
  EXPECT_NEAR(optimizer_seconds(d, Precision::fp32, 2, 1e6), 32e6 / 10e9, 1e-15);
  EXPECT_NEAR(optimizer_seconds(d, Precision::bf16, 2, 1e6), 30e6 / 10e9, 1e-15);
  EXPECT_EQ(stream_seconds(Device{}, Precision::fp32, m, whole, 2, 16), 0.0);  // not measured
}

TEST(TimeModel, RingLatencyCountsTheSteps) {
  EXPECT_DOUBLE_EQ(ring_latency_s(4, true, 10), 6 * 10e-6);
  EXPECT_DOUBLE_EQ(ring_latency_s(4, false, 10), 3 * 10e-6);
  EXPECT_EQ(ring_latency_s(1, true, 10), 0.0);
}

TEST(TimeModel, RefaultsCountPages) {
  Device d;
  d.page_fault_us = 2;
  EXPECT_NEAR(refault_seconds(d, 4096.0 * 1000), 1000 * 2e-6, 1e-15);
  EXPECT_EQ(refault_seconds(Device{}, 1e9), 0.0);
}

TEST(TimeModel, PipelineCriticalPathAndSharedCores) {
  PlanInput in;
  in.model = llama_preset("tiny");
  in.shape.pp = 2;
  in.batch = 2, in.seq_len = 16, in.micro_batches = 3;
  Device d = curve_device();
  const Plan p = make_plan(in, d);
  ASSERT_EQ(p.groups.size(), 2u);
  const double t0 = p.groups[0].compute_s + p.groups[0].tp_exposed_s;
  const double t1 = p.groups[1].compute_s + p.groups[1].tp_exposed_s;
  ASSERT_NE(t0, t1);  // the head makes the last stage heavier
  // Every stage once for one micro-batch, the slowest for the other two.
  const double critical = (t0 + t1 + 2 * std::max(t0, t1)) / 3;
  EXPECT_NEAR(p.step_s, critical + p.pp_exposed_s, 1e-12);
  d.oversubscription = 2;  // two threads a core: the critical path twice as fast, but no less
  const Plan q = make_plan(in, d);  // than the two ranks' work over the cores
  EXPECT_NEAR(q.step_s, std::max(critical / 2, (t0 + t1) / 2) + q.pp_exposed_s, 1e-12);
}

class Profiles : public test::ScratchDirTest {
 protected:
  std::string write(const std::string& text) {
    std::ofstream(file("p.json")) << text;
    return file("p.json");
  }
  Profile sample() const {
    Profile p;
    p.hosts = {"a", "b"};
    p.ranks = 4, p.ranks_per_host = 2, p.threads_per_rank = 1;
    p.memory_gb_per_rank = 12;
    p.gemm = {{"fp32", {{100, 20}, {500, 40}}}, {"bf16", {{100, 50}, {500, 90}}}};
    p.memory_gbps = 9;
    p.within = {2, 30};
    p.between = LinkProfile{80, 0.5};
    return p;
  }
};

TEST_F(Profiles, RoundTripAndDevice) {
  const Profile back = read_profile(write(profile_to_json(sample()).dump()));
  EXPECT_EQ(back.hosts, sample().hosts);
  auto sorted = [](auto g) {
    std::sort(g.begin(), g.end());
    return g;
  };
  EXPECT_EQ(sorted(back.gemm), sorted(sample().gemm));
  ASSERT_TRUE(back.between.has_value());
  const Device bf = back.device(Precision::bf16), f16 = back.device(Precision::fp16);
  EXPECT_EQ(bf.gemm_gflops, sample().gemm[1].second);
  EXPECT_EQ(f16.gemm_gflops, sample().gemm[0].second);  // widened to fp32: fp32's rates
  EXPECT_DOUBLE_EQ(bf.link_gbps, 0.5);
  EXPECT_DOUBLE_EQ(bf.tp_link_gbps, 30);
  EXPECT_DOUBLE_EQ(bf.latency_us, 80);
  EXPECT_DOUBLE_EQ(bf.memory_gb, 12);
}

TEST_F(Profiles, RefusedWithTheFileNamed) {
  auto error = [&](const std::string& text) {
    return test::error_of([&] { read_profile(write(text)); });
  };
  EXPECT_NE(test::error_of([&] { read_profile(file("none.json")); }).find("no such profile"),
            std::string::npos);
  EXPECT_NE(error("{not json").find("malformed"), std::string::npos);
  EXPECT_NE(error(R"({"format": "other"})").find("not a parallama profile"), std::string::npos);
  nlohmann::json j = profile_to_json(sample());
  j["version"] = kProfileVersion + 1;
  EXPECT_NE(error(j.dump()).find("profile version"), std::string::npos);
  j = profile_to_json(sample());
  j["links"]["within"]["gbps"] = -1;
  EXPECT_NE(error(j.dump()).find("links.within.gbps"), std::string::npos);
  j = profile_to_json(sample());
  j["gemm"]["fp32"] = {{500, 1}, {100, 2}};
  EXPECT_NE(error(j.dump()).find("not increasing"), std::string::npos);
  j = profile_to_json(sample());
  j.erase("memory_gbps");
  EXPECT_NE(error(j.dump()).find(file("p.json")), std::string::npos);
}

TEST(AutoLayout, EveryCandidateKeepsTheBatchAndTensorParallelismStaysOnAHost) {
  AutoInput in;
  in.base.model = llama_preset("tiny");
  in.base.seq_len = 16;
  in.global_batch = 8;
  in.ranks = 4, in.ranks_per_host = 2;
  const AutoResult r = search_layouts(in, curve_device());
  ASSERT_GT(r.valid.size(), 10u);
  EXPECT_GE(r.considered, static_cast<int>(r.valid.size()));
  for (size_t i = 0; i < r.valid.size(); ++i) {
    const PlanInput& p = r.valid[i].in;
    EXPECT_EQ(p.shape.dp * p.shape.tp * p.shape.pp, 4);
    EXPECT_LE(p.shape.tp, 2);
    EXPECT_EQ(p.shape.dp * p.batch * p.micro_batches, 8);
    if (i > 0 && r.valid[i].fits == r.valid[i - 1].fits)
      EXPECT_GE(r.valid[i].step_s, r.valid[i - 1].step_s);
  }
  Device small = curve_device();
  small.memory_gb = 1e-9;  // nothing fits
  for (const Candidate& c : search_layouts(in, small).valid) EXPECT_FALSE(c.fits);
  in.ranks = 3;  // not whole hosts
  EXPECT_NE(test::error_of([&] { search_layouts(in, small); }).find("do not divide"),
            std::string::npos);
}

}  // namespace parallama
