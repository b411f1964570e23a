// ZeRO's division of the gradient buckets, the sharded optimizer against the whole one, and a
// buffer handing its memory back.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "optim/schedule.h"
#include "parallel/zero.h"
#include "test_util.h"

namespace parallama {

using test::TinyModel;

TEST(Zero, BucketsCloseAtTensorsAndIsolateOne) {
  TinyModel m;
  const auto& specs = m.layout.specs();
  const int64_t embed = m.layout.find("model.embed_tokens.weight").offset;
  for (int64_t limit : {int64_t{1}, int64_t{5000}, m.layout.total()}) {
    const auto buckets = grad_buckets(m.layout, limit, embed);
    int64_t end = m.layout.total();
    for (const GradBucket& b : buckets) {  // from the end, contiguous, at tensor boundaries
      EXPECT_EQ(b.end, end);
      EXPECT_LT(b.begin, b.end);
      bool boundary = false;
      for (const ParamSpec& s : specs) boundary |= s.offset == b.begin;
      EXPECT_TRUE(boundary) << b.begin;
      end = b.begin;
    }
    EXPECT_EQ(end, 0);
    int alone = 0;  // the embedding is a bucket of exactly itself
    const ParamSpec& e = m.layout.find("model.embed_tokens.weight");
    for (const GradBucket& b : buckets) alone += b.begin == e.offset && b.end == e.offset + e.numel;
    EXPECT_EQ(alone, 1) << limit;
  }
}

TEST(Zero, PiecesCoverEveryElementOnceInRankOrder) {
  TinyModel m;
  const int D = 3;
  std::vector<int> owner(static_cast<size_t>(m.layout.total()), -1);
  int64_t owned_total = 0;
  for (int d = 0; d < D; ++d) {
    const ZeroPlan z = make_zero_plan(m.layout, D, d, 3000);
    int64_t at = 0, last_end = 0;
    for (const OwnedRun& r : z.runs) {  // flat order, packed into the shard
      EXPECT_EQ(r.at, at);
      EXPECT_GE(r.begin, last_end);
      for (int64_t i = r.begin; i < r.end; ++i) {
        EXPECT_EQ(owner[i], -1) << i;
        owner[i] = d;
      }
      at += r.end - r.begin, last_end = r.end;
    }
    EXPECT_EQ(z.owned, at);
    owned_total += z.owned;
    // About 1/D of the whole: each bucket divides evenly.
    EXPECT_NEAR(static_cast<double>(z.owned) / m.layout.total(), 1.0 / D, 0.01);
  }
  EXPECT_EQ(owned_total, m.layout.total());
  // Within every tensor the owners ascend: a tensor's pieces gather in rank order.
  for (const ParamSpec& s : m.layout.specs())
    for (int64_t i = s.offset + 1; i < s.offset + s.numel; ++i) ASSERT_LE(owner[i - 1], owner[i]);
}

// D sharded optimizers, each stepping its pieces from its shard of the gradients, leave the same
// parameters and moments as one optimizer stepping everything (bit for bit: the same kernels on
// the same elements), and their squared-norm pieces add up to the whole gradient's.
TEST(Zero, ShardedOptimizerEqualsWhole) {
  TinyModel m;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.1f);
  for (int64_t i = 0; i < m.grads.size(); ++i) m.grads.data()[i] = nd(rng);
  OptimConfig oc;
  const int D = 3;
  ParamBuffer whole_params(m.layout);
  std::memcpy(whole_params.data(), m.params.data(), 4 * m.params.size());
  Optimizer whole(m.layout, oc);
  for (int step = 1; step <= 3; ++step) whole.step(whole_params, m.grads, 1e-2f, 0, -1, 0.5f);

  ParamBuffer sharded_params(m.layout);
  std::memcpy(sharded_params.data(), m.params.data(), 4 * m.params.size());
  double sq = 0.0;
  for (int d = 0; d < D; ++d) {
    const ZeroPlan z = make_zero_plan(m.layout, D, d, 3000);
    Optimizer part(m.layout, oc, z.runs);
    EXPECT_EQ(part.state_bytes(), 2 * 4 * z.owned);
    std::vector<float> shard(static_cast<size_t>(z.owned));
    for (const OwnedRun& r : z.runs)
      std::memcpy(shard.data() + r.at, m.grads.data() + r.begin, 4 * (r.end - r.begin));
    std::vector<const float*> run_grads;
    for (const OwnedRun& r : z.runs) run_grads.push_back(shard.data() + r.at);
    sq += owned_sq_sum(m.layout, z.runs, run_grads, true);
    size_t runs_done = 0;
    for (int step = 1; step <= 3; ++step)
      part.step_owned(sharded_params, run_grads, 1e-2f, 0.5f, [&](size_t) { ++runs_done; });
    EXPECT_EQ(runs_done, 3 * z.runs.size());
    for (const OwnedRun& r : z.runs)
      for (int k = 0; k < 2; ++k)
        EXPECT_EQ(
            0, std::memcmp(part.state(k) + r.at, whole.state(k) + r.begin, 4 * (r.end - r.begin)));
  }
  EXPECT_EQ(0, std::memcmp(sharded_params.data(), whole_params.data(), 4 * m.params.size()));
  EXPECT_NEAR(std::sqrt(sq), grad_norm(m.grads), 1e-9 * grad_norm(m.grads));
}

TEST(Zero, ReleasedBufferIsZeroAndHandedBack) {
  Buffer b(size_t{4} << 20);  // 16 MB
  for (size_t i = 0; i < b.size(); ++i) b.data()[i] = 1.0f;
  EXPECT_GE(b.resident_bytes(), b.size() * sizeof(float) * 9 / 10);
  b.release();
  EXPECT_LT(b.resident_bytes(), size_t{1} << 16);  // at most the two edge pages
  double sum = 0;
  for (size_t i = 0; i < b.size(); ++i) sum += b.data()[i];
  EXPECT_EQ(sum, 0.0);
}

}  // namespace parallama
