// Network stragglers: which measured links are slow (under a quarter of the median), that one
// probe alone names nobody, and that a job on one host probes nothing.
#include <gtest/gtest.h>

#include "train/link_watch.h"

namespace parallama {

namespace {
std::vector<LinkRate> links(const std::vector<double>& rates) {
  std::vector<LinkRate> out;
  for (size_t i = 0; i < rates.size(); ++i)
    out.push_back({static_cast<int>(i), static_cast<int>((i + 1) % rates.size()), rates[i]});
  return out;
}
}  // namespace

TEST(LinkWatch, SlowLinksAreTheOnesFarUnderTheMedian) {
  EXPECT_DOUBLE_EQ(median_rate(links({3, 1, 2})), 2.0);
  EXPECT_DOUBLE_EQ(median_rate(links({4, 1, 2, 3})), 2.5);
  // 10 Mbit/s among unshaped links: named; timing noise of 2-3x: not.
  EXPECT_EQ(slow_links(links({1600, 700, 1.2})), (std::vector<size_t>{2}));
  EXPECT_EQ(slow_links(links({1600, 700, 512})), (std::vector<size_t>{}));
  // Two links: the median is their mean; the slower is named under 1/7 of the faster.
  EXPECT_EQ(slow_links(links({1000, 1.25})), (std::vector<size_t>{1}));
  EXPECT_EQ(slow_links(links({1000, 200})), (std::vector<size_t>{}));
  // A single link, or none, names nobody; several slow ones are all named.
  EXPECT_TRUE(slow_links(links({1.0})).empty());
  EXPECT_TRUE(slow_links({}).empty());
  EXPECT_EQ(slow_links(links({100, 100, 100, 1, 2})), (std::vector<size_t>{3, 4}));
}

TEST(LinkWatch, ASlowLinkIsConfirmedByTheNextProbe) {
  std::set<int> before;
  // Noise on one probe names nothing; a link slow twice in a row is named.
  EXPECT_TRUE(confirmed_slow_links(links({1600, 350, 1500}), before).empty());
  EXPECT_EQ(before, (std::set<int>{1}));
  EXPECT_TRUE(confirmed_slow_links(links({1600, 1400, 1500}), before).empty());
  EXPECT_TRUE(before.empty());
  EXPECT_TRUE(confirmed_slow_links(links({1600, 1400, 1.2}), before).empty());
  EXPECT_EQ(confirmed_slow_links(links({1600, 1400, 1.3}), before), (std::vector<size_t>{2}));
  // Another link slow once, after the first was confirmed: only pending.
  EXPECT_TRUE(confirmed_slow_links(links({1.1, 1400, 1500}), before).empty());
  EXPECT_EQ(before, (std::set<int>{0}));
}

TEST(LinkWatch, OneHostProbesNothing) {
  LinkWatch w(comm::Group(), 10, 1, true);
  for (int64_t step = 1; step < 50; ++step) EXPECT_FALSE(w.due(step));
  EXPECT_TRUE(w.report().empty());
}

}  // namespace parallama
