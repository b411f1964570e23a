// comm::Group collectives at any number of ranks (run under mpirun -np 1..4 by ctest): sums,
// uneven reduce-scatter and all-gather, broadcast, send/recv, barrier, non-blocking requests,
// split, traffic counted per group and in total, fp32 sums with bf16 on the wire, and the
// collective check that names the first mismatch instead of hanging.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "comm/launcher.h"
#include "dist_test_util.h"
#include "tensor/bf16.h"
#include "tensor/error.h"

namespace parallama::comm {

static Group* the_world;

TEST(Comm, AllReduceSumsOddCountsAndTypes) {
  const int n = the_world->size(), r = the_world->rank();
  std::vector<float> x(1001);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(r + 1) * float(i % 13);
  the_world->all_reduce(x.data(), int64_t(x.size()));
  const float ranks_sum = float(n * (n + 1) / 2);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], ranks_sum * float(i % 13));
  EXPECT_EQ(the_world->sum(int64_t(r)), int64_t(n * (n - 1) / 2));
  EXPECT_DOUBLE_EQ(the_world->sum(0.5 * r), 0.25 * n * (n - 1));
}

TEST(Comm, AllReduceMaxTakesTheLargestOfEveryElement) {
  const int n = the_world->size(), r = the_world->rank();
  std::vector<float> x(37);
  // Element i is largest on rank i % n; one element is negative everywhere.
  for (size_t i = 0; i < x.size(); ++i) x[i] = (int(i) % n == r ? 100.0f : float(r)) + float(i);
  x[5] = -1000.0f - float(r);
  the_world->all_reduce(x.data(), int64_t(x.size()), DType::F32, ReduceOp::Max);
  for (size_t i = 0; i < x.size(); ++i) {
    if (i != 5) {
      ASSERT_EQ(x[i], 100.0f + float(i)) << i;
    }
  }
  EXPECT_EQ(x[5], -1000.0f);
}

TEST(Comm, ReduceScatterAndAllGatherWithUnevenCounts) {
  const int n = the_world->size(), r = the_world->rank();
  for (int64_t total : {int64_t(10), int64_t(7), int64_t(n > 1 ? n - 1 : 1)}) {  // some ranks get 0
    const auto counts = even_counts(total, n);
    std::vector<float> full(total);
    for (int64_t i = 0; i < total; ++i) full[i] = float(i + 100 * r);
    const int64_t first = std::accumulate(counts.begin(), counts.begin() + r, int64_t(0));
    std::vector<float> mine(std::max<int64_t>(1, counts[r]));
    the_world->reduce_scatter(full.data(), mine.data(), counts);
    for (int64_t i = 0; i < counts[r]; ++i)
      ASSERT_EQ(mine[i], float(n * (first + i) + 100 * n * (n - 1) / 2)) << "total " << total;
    std::vector<float> gathered(total, -1.0f);
    the_world->all_gather(mine.data(), gathered.data(), counts);
    for (int64_t i = 0; i < total; ++i)
      ASSERT_EQ(gathered[i], float(n * i + 100 * n * (n - 1) / 2));
  }
}

TEST(Comm, BroadcastFromTheLastRank) {
  const int root = the_world->size() - 1;
  std::vector<double> x(37, the_world->rank() == root ? 3.25 : -1.0);
  the_world->broadcast(x.data(), 37, root, DType::F64);
  for (double v : x) ASSERT_EQ(v, 3.25);
}

TEST(Comm, SendRecvAroundARing) {
  const int n = the_world->size(), r = the_world->rank();
  if (n == 1) GTEST_SKIP() << "a ring needs two ranks";
  int64_t out = 1000 + r, in = -1;
  Request s = the_world->isend(&out, sizeof out, (r + 1) % n, 5);
  the_world->recv(&in, sizeof in, (r + n - 1) % n, 5);
  s.wait();
  EXPECT_EQ(in, 1000 + (r + n - 1) % n);
  the_world->barrier();
}

TEST(Comm, NonBlockingRequestsCompleteInAnyOrder) {
  const int n = the_world->size();
  std::vector<std::vector<float>> bufs(4, std::vector<float>(257, 1.0f));
  std::vector<Request> reqs;
  for (auto& b : bufs) reqs.push_back(the_world->iall_reduce(b.data(), 257));
  for (size_t i = reqs.size(); i-- > 0;) reqs[i].wait();
  for (auto& b : bufs) ASSERT_EQ(b[256], float(n));
}

TEST(Comm, SplitMakesIndependentGroups) {
  const int r = the_world->rank();
  Group sub = the_world->split(r % 2, r);
  const int expect = (the_world->size() + (r % 2 == 0 ? 1 : 0)) / 2;
  EXPECT_EQ(sub.size(), expect);
  EXPECT_EQ(sub.rank(), r / 2);
  EXPECT_EQ(sub.sum(int64_t(r)), [&] {
    int64_t s = 0;
    for (int i = r % 2; i < the_world->size(); i += 2) s += i;
    return s;
  }());
}

TEST(Comm, TrafficIsCountedPerGroupAndInTotal) {
  const int n = the_world->size(), r = the_world->rank();
  Group a = the_world->split(0, r);
  Group copy = a;  // copies share a's counter; b, split from a, has its own
  Group b = a.split(r % 2, r);
  const Traffic world0 = the_world->traffic();
  const int64_t total0 = the_world->bytes_sent();
  std::vector<float> x(100, 1.0f);
  copy.all_reduce(x.data(), 100);
  b.all_reduce(x.data(), 100);
  b.all_reduce(x.data(), 100);
  const double ring_a = 2.0 * (n - 1) / n * 400.0;
  const double ring_b = 2.0 * (b.size() - 1) / b.size() * 400.0;
  EXPECT_DOUBLE_EQ(a.traffic().sent, ring_a);
  EXPECT_DOUBLE_EQ(a.traffic().received, ring_a);
  EXPECT_DOUBLE_EQ(copy.traffic().sent, ring_a);
  EXPECT_DOUBLE_EQ(b.traffic().sent, 2 * ring_b);
  EXPECT_DOUBLE_EQ(the_world->traffic().sent,
                   world0.sent);  // nothing went through the world itself
  // The total, shared by every group split from the world, holds both (truncated to bytes).
  EXPECT_NEAR(double(the_world->bytes_sent() - total0), ring_a + 2 * ring_b, 1.0);
  if (n > 1) {  // point to point: exactly the bytes
    int64_t out = r, in = -1;
    Request s = a.isend(&out, sizeof out, (r + 1) % n, 7);
    a.recv(&in, sizeof in, (r + n - 1) % n, 7);
    s.wait();
    EXPECT_DOUBLE_EQ(a.traffic().sent, ring_a + 8);
    EXPECT_DOUBLE_EQ(a.traffic().received, ring_a + 8);
    EXPECT_DOUBLE_EQ(b.traffic().received, 2 * ring_b);
  }
}

// Rank r's value i, the same formula on every rank; exact in bf16 for some, not for others.
float wire_value(int r, int64_t i) {
  return 1.0f + 0.0137f * float(i % 97) + 0.25f * float(r) + 1e-3f * float(r * r);
}

// The sum that rank o computes for element i of its chunk: in rank order, in fp32, its own value
// as it is and the others' rounded to bf16 (as the wire carries them).
float owner_sum(int n, int o, int64_t i) {
  float s = 0.0f;
  for (int r = 0; r < n; ++r)
    s += r == o ? wire_value(r, i) : bf16_to_float(float_to_bf16(wire_value(r, i)));
  return s;
}

TEST(Comm, WireSumsAreFp32SumsOfBf16Messages) {
  const int n = the_world->size(), r = the_world->rank();
  Group g = the_world->split(0, r);
  for (int64_t total : {int64_t(1001), int64_t(n > 1 ? n - 1 : 1)}) {  // some chunks empty
    const auto counts = even_counts(total, n);
    std::vector<int64_t> first(n, 0);
    for (int k = 1; k < n; ++k) first[k] = first[k - 1] + counts[k - 1];
    auto owner = [&](int64_t i) {
      return int(std::upper_bound(first.begin(), first.end(), i) - first.begin()) - 1;
    };
    std::vector<float> x(total);
    for (int64_t i = 0; i < total; ++i) x[i] = wire_value(r, i);
    const Traffic t0 = g.traffic();
    g.iall_reduce_wire(x.data(), total, DType::BF16).wait();
    for (int64_t i = 0; i < total; ++i) {
      const float want =
          n == 1 ? wire_value(0, i) : bf16_to_float(float_to_bf16(owner_sum(n, owner(i), i)));
      ASSERT_EQ(x[i], want) << "element " << i << " of " << total;
    }
    // The bytes of bf16 messages: the others' chunks out and this rank's in, then back again.
    const double moved = n == 1 ? 0.0 : 2.0 * double(total - counts[r] + (n - 1) * counts[r]);
    EXPECT_DOUBLE_EQ(g.traffic().sent - t0.sent, n == 1 ? 0.0 : moved);
    EXPECT_DOUBLE_EQ(g.traffic().received - t0.received, n == 1 ? 0.0 : moved);
    // Reduce-scatter: this rank's piece holds its unrounded sum.
    for (int64_t i = 0; i < total; ++i) x[i] = wire_value(r, i);
    std::vector<float> mine(std::max<int64_t>(1, counts[r]));
    g.ireduce_scatter_wire(x.data(), mine.data(), counts, DType::BF16).wait();
    for (int64_t j = 0; j < counts[r]; ++j)
      ASSERT_EQ(mine[j], n == 1 ? wire_value(0, j) : owner_sum(n, r, first[r] + j)) << j;
  }
  float one = 1.0f;
  EXPECT_THROW(g.iall_reduce_wire(&one, 1, DType::F16), Error);  // bf16 and int8 only
  EXPECT_THROW(g.all_reduce(&one, 1, DType::BF16), Error);       // MPI cannot sum bf16
}

// The test's own blockwise integer formats: int8 (blocks of 256, values to ±127) and int4 (blocks
// of 64, values to ±7, two to a byte).
struct IntWire {
  DType type;
  int64_t block;
  float max;
  double value_bytes(int64_t c) const {
    return type == DType::I8 ? double(c) : double((c + 1) / 2);
  }
  // A chunk of c values: 4·ceil(c/block) bytes of scales, then the values, padded to 4 bytes.
  double bytes(int64_t c) const {
    return double(4 * ((c + block - 1) / block)) + std::ceil(value_bytes(c) / 4) * 4;
  }
  // The round trip of a chunk (blocks start at the chunk's start): what the wire carries, decoded.
  std::vector<float> round_trip(const std::vector<float>& x) const {
    std::vector<float> y(x.size());
    const auto n = static_cast<int64_t>(x.size());
    for (int64_t b0 = 0; b0 < n; b0 += block) {
      const int64_t b1 = std::min(n, b0 + block);
      float mx = 0.0f;
      for (int64_t j = b0; j < b1; ++j) mx = std::max(mx, std::fabs(x[j]));
      const float scale = mx / max, inv = mx > 0.0f ? max / mx : 0.0f;
      for (int64_t j = b0; j < b1; ++j)
        y[j] = std::clamp(std::nearbyint(x[j] * inv), -max, max) * scale;
    }
    return y;
  }
};
const IntWire kInt8Wire{DType::I8, kWireInt8Block, 127.0f},
    kInt4Wire{DType::I4, kWireInt4Block, 7.0f};

// int8 and int4 on the wire: each chunk blockwise (a scale per block), summed in fp32 by its owner
// with its own values exact, the sum encoded once and decoded alike on every rank; what the
// encoding dropped, summed over the ranks, makes the result the exact sum again; the bytes are
// the encoded chunks'.
TEST(Comm, WireSumsInIntegersAreBlockwiseAndReportWhatTheyDrop) {
  const int n = the_world->size(), r = the_world->rank();
  Group g = the_world->split(0, r);
  for (const IntWire& w : {kInt8Wire, kInt4Wire}) {
    SCOPED_TRACE(dtype_name(w.type));
    auto value = [](int rank, int64_t i) {  // signs and magnitudes that differ block to block
      return (i % 3 == 0 ? -1.0f : 1.0f) * (0.5f + 0.01f * float(i % 311)) * (1.0f + 0.3f * rank);
    };
    for (int64_t total : {int64_t(1001), int64_t(3 * w.block + 7), int64_t(n > 1 ? n - 1 : 1)}) {
      const auto counts = even_counts(total, n);
      std::vector<int64_t> first(n + 1, 0);
      for (int k = 0; k < n; ++k) first[k + 1] = first[k] + counts[k];
      // The expected result, chunk by chunk, from every rank's values.
      std::vector<float> want(total), exact(total, 0.0f);
      for (int o = 0; o < n; ++o) {
        std::vector<float> sum(counts[o], 0.0f), v(counts[o]);
        for (int q = 0; q < n; ++q) {
          for (int64_t j = 0; j < counts[o]; ++j) v[j] = value(q, first[o] + j);
          if (q != o) v = w.round_trip(v);  // as the wire carries the others' values
          for (int64_t j = 0; j < counts[o]; ++j) sum[j] += v[j];
        }
        if (n > 1) sum = w.round_trip(sum);  // the owner's sum, encoded once
        for (int64_t j = 0; j < counts[o]; ++j) want[first[o] + j] = sum[j];
      }
      for (int q = 0; q < n; ++q)
        for (int64_t i = 0; i < total; ++i) exact[i] += value(q, i);
      std::vector<float> x(total), dropped(total, 7.0f);
      for (int64_t i = 0; i < total; ++i) x[i] = value(r, i);
      const Traffic t0 = g.traffic();
      g.iall_reduce_wire(x.data(), total, w.type, dropped.data()).wait();
      for (int64_t i = 0; i < total; ++i)
        ASSERT_EQ(x[i], want[i]) << "element " << i << " of " << total;
      auto bytes = [&](int64_t c) { return w.bytes(c); };
      double all_bytes = 0;
      for (int k = 0; k < n; ++k) all_bytes += bytes(counts[k]);
      const double moved = n == 1 ? 0.0 : all_bytes - bytes(counts[r]) + (n - 1) * bytes(counts[r]);
      EXPECT_DOUBLE_EQ(g.traffic().sent - t0.sent, moved);
      EXPECT_DOUBLE_EQ(g.traffic().received - t0.received, moved);
      // Σ over ranks of dropped, plus the result: the exact sum (up to fp32 rounding).
      g.all_reduce(dropped.data(), total);
      double worst = 0;
      for (int64_t i = 0; i < total; ++i)
        worst = std::max(worst, double(std::fabs(dropped[i] + x[i] - exact[i])));
      EXPECT_LT(worst, 1e-5 * n);
    }
    // The round trip's error bound: half a step of the block's scale.
    std::vector<float> v(1000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * float(i)) * float(1 + i % 5);
    const std::vector<float> d = w.round_trip(v);
    const auto B = static_cast<size_t>(w.block);
    for (size_t b0 = 0; b0 < v.size(); b0 += B) {
      float mx = 0.0f;
      for (size_t j = b0; j < std::min(v.size(), b0 + B); ++j) mx = std::max(mx, std::fabs(v[j]));
      for (size_t j = b0; j < std::min(v.size(), b0 + B); ++j)
        ASSERT_LE(std::fabs(d[j] - v[j]), mx / (2 * w.max) * 1.0001f) << j;
    }
  }
}

TEST(Comm, WireSumsAreCheckedAsCollectives) {
  const int n = the_world->size(), r = the_world->rank();
  if (n == 1) GTEST_SKIP() << "a mismatch needs two ranks";
  Group g = the_world->split(0, r);
  g.set_options({true, 30.0});
  std::vector<float> x(8, 1.0f);
  std::string msg;
  try {
    g.iall_reduce_wire(x.data(), r == 1 ? 7 : 8, DType::BF16).wait();  // rank 1 counts 7
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("collective mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  g.barrier();
}

TEST(Comm, CheckedCollectivesNameTheFirstMismatch) {
  const int n = the_world->size(), r = the_world->rank();
  if (n == 1) GTEST_SKIP() << "a mismatch needs two ranks";
  Group g = the_world->split(0, r);
  g.set_options({true, 30.0});
  float x = 1.0f;
  g.all_reduce(&x, 1);  // agreeing ranks pass the check
  EXPECT_EQ(x, float(n));
  std::string msg;
  try {
    if (r == 1)
      g.broadcast(&x, 1, 0);  // rank 1 goes its own way
    else
      g.all_reduce(&x, 1);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("collective mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("broadcast #1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("all_reduce #1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  g.barrier();  // the check threw before any rank started the real collective: still in step
}

}  // namespace parallama::comm

int main(int argc, char** argv) {
  return parallama::test::run_mpi_tests(argc, argv, parallama::comm::the_world, /*checked=*/false);
}
