// GradReducer with parallel.compress = "bf16" at any number of ranks (run under mpirun -np
// 1..4 by ctest). Every rank fills the gradients with values known to all ranks; the result must
// be, bit for bit, what data_parallel.h promises for element i of the chunk that rank o owns:
//   s = Σ_r v_r in rank order 0..D-1, in fp32, v_o = x_o(i) and v_r = bf16(x_r(i)) for r ≠ o;
//   all-reduce: every rank holds bf16(s); ZeRO: rank o's piece holds s.
// Buckets of one tensor each (4, 36, 90, ... elements: most not divisible by 3 or 4 ranks), of a
// few tensors, and one bucket of everything; two steps in a row; the bytes counted on the group are
// the bf16 messages', half of what fp32 moves. A group of one leaves the gradients untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>

#include "comm/launcher.h"
#include "dist_test_util.h"
#include "model/config.h"
#include "parallel/data_parallel.h"
#include "parallel/sync.h"
#include "tensor/bf16.h"
#include "tensor/error.h"

namespace parallama {

static comm::Group* world;

namespace {

// A layout with odd tensor sizes (tensors are padded to 16 floats, except q and k, and gate
// before up): dim 2 gives q and k of 4 elements, gate of 14; dim 6 q and k of 36, gate of 90,
// an embedding of 222.
LlamaConfig odd_config(int dim, int vocab) {
  LlamaConfig c;
  c.dim = dim, c.n_layers = 2, c.n_heads = 1, c.n_kv_heads = 1, c.ffn_dim = 2 * dim + 3;
  c.vocab_size = vocab, c.max_seq_len = 8;
  return c;
}

// Rank r's gradient at flat offset i: a few significant bits beyond bf16's, signs and
// magnitudes (2^-6 .. 2^6) mixed, so rounding and cancellation both happen.
float value(int r, int64_t i) {
  const float mant = static_cast<float>((i * 7919 + r * 104729 + 13) % 2003 - 1001) / 997.0f;
  return std::ldexp(mant * (1.0f + 0.37f * static_cast<float>(r)), static_cast<int>(i % 13) - 6);
}

float bf16_round(float x) {
  return bf16_to_float(float_to_bf16(x));
}

// What the owner of element i sums.
float owner_sum(int owner, int D, int64_t i) {
  float s = 0.0f;
  for (int r = 0; r < D; ++r) s += r == owner ? value(r, i) : bf16_round(value(r, i));
  return s;
}

// The rank that owns flat offset i of bucket [begin, begin + counts total).
int owner_of(const std::vector<int64_t>& counts, int64_t begin, int64_t i) {
  int64_t lo = begin;
  for (size_t r = 0; r < counts.size(); ++r) {
    if (i < lo + counts[r]) return static_cast<int>(r);
    lo += counts[r];
  }
  return -1;
}

void fill(ParamBuffer& g, int rank) {
  for (int64_t i = 0; i < g.size(); ++i) g.data()[i] = value(rank, i);
}

// Backward's order: tensors finish from the last to the first.
ReduceStats run_step(GradReducer& red, const ParamLayout& layout) {
  red.begin();
  const auto& specs = layout.specs();
  for (size_t k = specs.size(); k-- > 0;) red.ready_from(specs[k].offset);
  return red.finish();
}

struct Case {
  int dim, vocab;
  int64_t bucket_bytes;
};
const Case kCases[] = {{2, 5, 4}, {6, 37, 4}, {6, 37, 1 << 20}, {6, 37, 600}};

}  // namespace

TEST(ReduceBf16, ParsesTheSetting) {
  EXPECT_EQ(parse_compress("none"), Compress::none);
  EXPECT_EQ(parse_compress("bf16"), Compress::bf16);
  EXPECT_EQ(parse_compress("int8"), Compress::int8);
  EXPECT_EQ(parse_compress("powersgd"), Compress::powersgd);
  std::string msg;
  try {
    parse_compress("fp16");
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("parallel.compress"), std::string::npos) << msg;
}

TEST(ReduceBf16, AllReduceIsTheRoundedSumOfRoundedInputs) {
  const int D = world->size(), me = world->rank();
  for (const Case& c : kCases) {
    const LlamaConfig cfg = odd_config(c.dim, c.vocab);
    const ParamLayout layout(cfg, ModelShard::whole(cfg));
    ParamBuffer g(layout);
    comm::Group dp = world->split(0, me);
    GradReducer red(dp, g, c.bucket_bytes, Compress::bf16);
    const auto buckets = grad_buckets(layout, c.bucket_bytes / 4);
    ASSERT_EQ(red.num_buckets(), buckets.size());
    for (int step = 0; step < 2; ++step) {  // buffers and message tags are reused
      fill(g, me);
      const comm::Traffic t0 = dp.traffic();
      const ReduceStats rs = run_step(red, layout);
      const comm::Traffic t1 = dp.traffic();
      int64_t wrong = 0, changed = 0, first_wrong = -1;
      double sent = 0, received = 0, fp32_ring = 0;
      for (const GradBucket& b : buckets) {
        const int64_t n = b.end - b.begin;
        const auto counts = comm::even_counts(n, D);
        const int64_t mine = counts[me];
        sent += 2.0 * (n - mine) + 2.0 * (D - 1) * mine;  // phase 1, phase 2
        received += 2.0 * (D - 1) * mine + 2.0 * (n - mine);
        fp32_ring += 2.0 * (D - 1) / D * 4.0 * n;
        for (int64_t i = b.begin; i < b.end; ++i) {
          const float want =
              D == 1 ? value(0, i) : bf16_round(owner_sum(owner_of(counts, b.begin, i), D, i));
          if (std::memcmp(&want, g.data() + i, 4) != 0) {
            if (first_wrong < 0) first_wrong = i;
            ++wrong;
          }
          float exact = 0.0f;
          for (int r = 0; r < D; ++r) exact += value(r, i);
          changed += g.data()[i] != exact;
        }
      }
      EXPECT_EQ(wrong, 0) << "dim " << c.dim << " bucket " << c.bucket_bytes << " step " << step
                          << ": first wrong element " << first_wrong;
      if (D > 1) {
        EXPECT_GT(changed, g.size() / 4) << "the sum was not rounded: is bf16 on the wire?";
        EXPECT_DOUBLE_EQ(t1.sent - t0.sent, sent);
        EXPECT_DOUBLE_EQ(t1.received - t0.received, received);
        // Half of the fp32 ring all-reduce's bytes (to within the uneven division's elements).
        // Per bucket: bf16 sends 2n + 2(D-2)·counts[me] bytes, fp32's ring 8(D-1)/D·n, and
        // counts[me] lies within one element of n / D.
        const double slack =
            2.0 * (D - 2) * double(buckets.size()) / (8.0 * (D - 1) / D * g.size());
        EXPECT_NEAR((t1.sent - t0.sent) / fp32_ring, 0.5, slack + 1e-12);
        EXPECT_EQ(rs.buckets, static_cast<int>(buckets.size()));
      } else {
        EXPECT_EQ(t1.sent, t0.sent);
      }
    }
    // Every rank holds the same result (checked above against the formula; here across ranks).
    std::vector<float> rank0(g.data(), g.data() + g.size());
    world->broadcast(rank0.data(), g.size(), 0);
    EXPECT_EQ(test::differing(rank0.data(), g.data(), g.size()), 0);
  }
}

TEST(ReduceBf16, ZeroPiecesHoldTheUnroundedOwnerSum) {
  const int D = world->size(), me = world->rank();
  for (const Case& c : kCases) {
    for (bool in_place : {true, false}) {  // ZeRO-1: at the bucket's start; ZeRO-2: a shard
      const LlamaConfig cfg = odd_config(c.dim, c.vocab);
      const ParamLayout layout(cfg, ModelShard::whole(cfg));
      ParamBuffer g(layout);
      const ZeroPlan z = make_zero_plan(layout, D, me, c.bucket_bytes / 4);
      std::vector<float> shard(static_cast<size_t>(z.owned) + 1, -7.0f);
      std::vector<float*> out;
      for (size_t i = 0; i < z.buckets.size(); ++i)
        out.push_back(in_place ? g.data() + z.buckets[i].begin : shard.data() + z.piece_at[i]);
      comm::Group dp = world->split(0, me);
      GradReducer red(dp, g, z, out, Compress::bf16);
      for (int step = 0; step < 2; ++step) {
        fill(g, me);
        const comm::Traffic t0 = dp.traffic();
        run_step(red, layout);
        const comm::Traffic t1 = dp.traffic();
        int64_t wrong = 0;
        double sent = 0;
        for (size_t i = 0; i < z.buckets.size(); ++i) {
          const int64_t n = z.buckets[i].end - z.buckets[i].begin;
          sent += 2.0 * (n - z.counts[i][me]);
          for (int64_t j = 0; j < z.counts[i][me]; ++j) {
            const int64_t flat = z.piece_begin[i] + j;
            const float want = D == 1 ? value(0, flat) : owner_sum(me, D, flat);
            wrong += std::memcmp(&want, out[i] + j, 4) != 0;
          }
        }
        EXPECT_EQ(wrong, 0) << "dim " << c.dim << " bucket " << c.bucket_bytes
                            << (in_place ? " in place" : " shard") << " step " << step;
        if (D > 1) {
          EXPECT_DOUBLE_EQ(t1.sent - t0.sent, sent);  // phase 1 only
        }
      }
      EXPECT_EQ(shard.back(), -7.0f);  // nothing written past the shard
    }
  }
}

// int8 and PowerSGD (rank 1) with error feedback: over K steps of different gradients, what the
// reductions delivered plus what the ranks still hold in their residuals equals the sum of every
// rank's true gradients (nothing lost, only delayed), for the all-reduce and for ZeRO's
// reduce-scatter; the replicas of the all-reduce hold the same bits; both compress (the dp bytes
// at most 0.3 of fp32's for int8; PowerSGD, whose 6-wide matrices here are mostly padding and
// norms that travel whole, under ZeRO two all-reduces against one reduce-scatter, at most 0.9);
// compress_after's steps travel exactly. The gradients come scaled by a loss scale that changes
// from step to step (fp16's, powers of two): the residual stays in the true gradients' units.
TEST(ReduceInt8, ErrorFeedbackLosesNothing) {
  const int D = world->size(), me = world->rank();
  const LlamaConfig cfg = odd_config(6, 37);
  const ParamLayout layout(cfg, ModelShard::whole(cfg));
  const int K = 5;
  for (Compress c : {Compress::int8, Compress::powersgd})
    for (bool zero : {false, true}) {
      SCOPED_TRACE(compress_name(c));
      ParamBuffer g(layout);
      comm::Group dp = world->split(0, me);
      const ZeroPlan z = make_zero_plan(layout, D, me, 600 / 4);
      std::vector<float> shard(static_cast<size_t>(z.owned));
      std::vector<float*> out;
      for (size_t i = 0; i < z.buckets.size(); ++i) out.push_back(shard.data() + z.piece_at[i]);
      std::unique_ptr<GradReducer> red =
          zero ? std::make_unique<GradReducer>(dp, g, z, out, c, 1, 1)
               : std::make_unique<GradReducer>(dp, g, 600, c, false, 1, 1);
      // Σ over steps of the delivered sums (for ZeRO: this rank's pieces), and of the true sums.
      std::vector<double> delivered(g.size(), 0.0), truth(g.size(), 0.0);
      double bytes_first = 0, bytes_later = 0;
      const float scales[K] = {1.0f, 4.0f, 0.5f, 0.5f, 8.0f};
      for (int step = 1; step <= K; ++step) {
        const float S = scales[step - 1];
        for (int64_t i = 0; i < g.size(); ++i) {
          g.data()[i] = value(me, i * step + step) * S;
          for (int r = 0; r < D; ++r) truth[i] += value(r, i * step + step);
        }
        const double sent0 = dp.traffic().sent;
        red->begin(step, 1.0f / S);
        const auto& specs = layout.specs();
        for (size_t k = specs.size(); k-- > 0;) red->ready_from(specs[k].offset);
        red->finish();
        (step == 1 ? bytes_first : bytes_later) += dp.traffic().sent - sent0;
        if (!zero) {
          for (int64_t i = 0; i < g.size(); ++i) delivered[i] += g.data()[i] / S;
          std::vector<float> rank0(g.data(), g.data() + g.size());
          world->broadcast(rank0.data(), g.size(), 0);
          EXPECT_EQ(test::differing(rank0.data(), g.data(), g.size()), 0) << "step " << step;
        } else {
          for (size_t b = 0; b < z.buckets.size(); ++b)
            for (int64_t j = 0; j < z.counts[b][me]; ++j)
              delivered[z.piece_begin[b] + j] += out[b][j] / S;
        }
      }
      // ZeRO: each rank delivered its own pieces; the others' come from their owners.
      if (zero) world->all_reduce(delivered.data(), g.size(), DType::F64);
      std::vector<float> residual = red->residual();
      if (D == 1) {
        EXPECT_TRUE(residual.empty());
        residual.assign(g.size(), 0.0f);
      }
      std::vector<double> left(residual.begin(), residual.end());
      world->all_reduce(left.data(), g.size(), DType::F64);
      double worst = 0, scale = 0, pending = 0;
      for (int64_t i = 0; i < g.size(); ++i) {
        worst = std::max(worst, std::fabs(delivered[i] + left[i] - truth[i]));
        scale = std::max(scale, std::fabs(truth[i]));
        pending = std::max(pending, std::fabs(left[i]));
      }
      EXPECT_LT(worst, 1e-5 * scale) << (zero ? "ZeRO" : "all-reduce");
      if (D > 1) {
        EXPECT_GT(pending, 1e-4 * scale) << "compression dropped nothing: was it used?";
        EXPECT_LT(bytes_later / (K - 1), (c == Compress::int8 ? 0.3 : 0.9) * bytes_first)
            << "compressed bytes against fp32's";
      }
    }
}

// The replicas' check (parallel.check_collectives under --sync allreduce): equal parameters pass;
// one bit flipped on the last rank is named, on every rank.
TEST(ReduceInt8, ReplicasThatDriftAreNamed) {
  const int D = world->size(), me = world->rank();
  const LlamaConfig cfg = odd_config(6, 37);
  const ParamLayout layout(cfg, ModelShard::whole(cfg));
  ParamBuffer p(layout);
  fill(p, 0);
  comm::Group dp = world->split(0, me);
  EXPECT_NO_THROW(check_replicas_equal(p, dp, 3));
  if (D == 1) return;
  if (me == D - 1) p.data()[p.size() / 2] = std::nextafter(p.data()[p.size() / 2], 1e9f);
  std::string msg;
  try {
    check_replicas_equal(p, dp, 4);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("replicas drifted: after step 4, data-parallel rank " + std::to_string(D - 1)),
            std::string::npos)
      << msg;
}

TEST(ReduceBf16, Fp32StaysExact) {
  const int D = world->size(), me = world->rank();
  const LlamaConfig cfg = odd_config(6, 37);
  const ParamLayout layout(cfg, ModelShard::whole(cfg));
  ParamBuffer g(layout);
  GradReducer red(world->split(0, me), g, 600, Compress::none);
  for (int64_t i = 0; i < g.size(); ++i) g.data()[i] = static_cast<float>((me + 1) * (i % 101));
  run_step(red, layout);
  int64_t wrong = 0;
  for (int64_t i = 0; i < g.size(); ++i)
    wrong += g.data()[i] != static_cast<float>(D * (D + 1) / 2 * (i % 101));
  EXPECT_EQ(wrong, 0);
}

}  // namespace parallama

int main(int argc, char** argv) {
  return parallama::test::run_mpi_tests(argc, argv, parallama::world, /*checked=*/false);
}
