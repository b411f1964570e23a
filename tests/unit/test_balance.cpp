// Dynamic balancing's shares: in proportion to speed, whole micro-batches that add up to the
// global batch, each at least 1 and at most the cap, the same on every rank.
#include <gtest/gtest.h>

#include <numeric>

#include "parallel/balance.h"
#include "test_util.h"

namespace parallama {

TEST(Balance, SharesFollowTheRatesAndAddUp) {
  EXPECT_EQ(shares_by_rate({1, 1, 1}, 12, 8), (std::vector<int>{4, 4, 4}));
  EXPECT_EQ(shares_by_rate({2, 2, 1}, 10, 8), (std::vector<int>{4, 4, 2}));
  // 12 by 1 : 1 : 0.5 is 4.8, 4.8, 2.4: the whole parts and then the largest remainders.
  EXPECT_EQ(shares_by_rate({1, 1, 0.5}, 12, 8), (std::vector<int>{5, 5, 2}));
  // Nothing measured, or nonsense: equal shares.
  EXPECT_EQ(shares_by_rate({0, 0}, 6, 6), (std::vector<int>{3, 3}));
  EXPECT_EQ(shares_by_rate({std::nan(""), -1}, 6, 6), (std::vector<int>{3, 3}));
  // A rank that stalls still takes one micro-batch; the cap hands the rest on.
  EXPECT_EQ(shares_by_rate({1e-9, 1, 1}, 12, 8), (std::vector<int>{1, 6, 5}));
  EXPECT_EQ(shares_by_rate({100, 1, 1}, 12, 6), (std::vector<int>{6, 3, 3}));
  EXPECT_THROW(shares_by_rate({1, 1}, 13, 6), Error);
}

TEST(Balance, PropertyEveryShareIsBoundedAndTheyAddUp) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> rate(0.0, 10.0);
  for (int trial = 0; trial < 2000; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 8), per = 1 + static_cast<int>(rng() % 8);
    const int cap = per + static_cast<int>(rng() % (2 * per));
    std::vector<double> r(n);
    for (double& x : r) x = rng() % 5 == 0 ? 0.0 : rate(rng);
    const std::vector<int> s = shares_by_rate(r, n * per, cap);
    ASSERT_EQ(std::accumulate(s.begin(), s.end(), 0), n * per);
    for (int i = 0; i < n; ++i) {
      ASSERT_GE(s[i], 1);
      ASSERT_LE(s[i], cap);
    }
    // A faster rank never gets fewer micro-batches.
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j)
        if (r[i] > r[j] && s[i] < s[j]) {
          ADD_FAILURE() << "trial " << trial << ": a faster rank got fewer micro-batches";
          return;
        }
  }
}

TEST(Balance, BalancerRanksTakeConsecutiveMicroBatches) {
  Balancer b(3, 4, 10, 2.0);
  EXPECT_EQ(b.cap(), 8);
  EXPECT_EQ(b.first(0), 0);
  EXPECT_EQ(b.first(2), 8);
  comm::Group alone;  // one rank: its speed alone, shares stay whole
  Balancer one(1, 4, 2, 2.0);
  EXPECT_FALSE(one.observe(alone, 0.5));
  EXPECT_FALSE(one.observe(alone, 0.5));
  EXPECT_EQ(one.share(0), 4);
}

}  // namespace parallama
