// Data-parallel generation's pieces: the prompt file, the batch plan, sharing by cost and the
// gather back into input order.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>

#include "infer/prompts.h"
#include "infer/share.h"
#include "scratch_dir.h"
#include "tensor/error.h"

namespace parallama {

namespace {

class PromptFile : public test::ScratchDirTest {
 protected:
  std::string write(const std::string& text) {
    const std::string path = file("p.txt");
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  // The message read_prompts throws for `text`, or "" when it reads.
  std::string error(const std::string& text) {
    try {
      read_prompts(write(text));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
};

}  // namespace

TEST_F(PromptFile, PlainLinesAreNumberedByTheirLine) {
  const auto p = read_prompts(write("\xEF\xBB\xBFIn the beginning\r\n\n  \nAnd God said\nlast"));
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].text, "In the beginning");
  EXPECT_EQ(p[0].id, 1);
  EXPECT_EQ(p[1].text, "And God said");
  EXPECT_EQ(p[1].id, 4);
  EXPECT_EQ(p[2].id, 5);
  EXPECT_FALSE(p[0].seed.has_value());
}

TEST_F(PromptFile, JsonLinesKeepIdsAndSeeds) {
  const auto p = read_prompts(
      write("{\"id\": \"a\", \"prompt\": \"x y\", \"seed\": 9}\n\n{\"prompt\": \"{not json}\"}\n"
            "{\"id\": 7, \"prompt\": \"z\"}\n"));
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].id, "a");
  EXPECT_EQ(p[0].text, "x y");
  EXPECT_EQ(p[0].seed, 9u);
  EXPECT_EQ(p[1].id, 3);  // no id: the line number
  EXPECT_EQ(p[1].text, "{not json}");
  EXPECT_EQ(p[2].id, 7);
}

TEST_F(PromptFile, BadFilesAreRefusedWithTheirLine) {
  EXPECT_NE(error("").find("no prompts"), std::string::npos);
  EXPECT_NE(error("\n \n").find("no prompts"), std::string::npos);
  EXPECT_NE(error("{\"prompt\": \"a\"}\n{\"prompt\": 3}\n").find("p.txt:2: each line must be"),
            std::string::npos);
  EXPECT_NE(error("{\"prompt\": \"a\"}\nplain\n").find("p.txt:2: not a JSON object"),
            std::string::npos);
  EXPECT_NE(error("{\"prompt\": \"  \"}\n").find("p.txt:1: the prompt is empty"),
            std::string::npos);
  EXPECT_NE(error("{\"prompt\": \"a\", \"seed\": -1}\n").find("\"seed\" must be"),
            std::string::npos);
  EXPECT_NE(error("{\"prompt\": \"a\", \"id\": [1]}\n").find("\"id\" must be"), std::string::npos);
  EXPECT_NE(error("{\"prompt\": \"a\", \"id\": \"q\"}\n{\"prompt\": \"b\", \"id\": \"q\"}\n")
                .find("p.txt:2: id \"q\" repeats"),
            std::string::npos);
  EXPECT_NE(error("ok\n\xC3\x28\n").find("not valid UTF-8"), std::string::npos);
  EXPECT_NE(error(std::string("a\0b\n", 4)).find("binary"), std::string::npos);
  EXPECT_THROW(read_prompts(file("missing.txt")), Error);
  EXPECT_THROW(read_prompts(dir_.string()), Error);
}

TEST(PlanBatches, LongestFirstInBatchesOfAtMostB) {
  const std::vector<int64_t> len = {3, 9, 1, 9, 4, 7, 2};
  const auto b = plan_batches(len, 3);
  const std::vector<std::vector<int64_t>> want = {{1, 3, 5}, {4, 0, 6}, {2}};
  EXPECT_EQ(b, want);
  EXPECT_EQ(plan_batches(len, 100).size(), 1u);
  EXPECT_EQ(plan_batches(len, 1).size(), len.size());
  EXPECT_THROW(plan_batches(len, 0), Error);
}

// Longest-processing-time: every item once, the slowest rank within 4/3 of the best possible
// (and of the average), the same answer on every call.
TEST(ShareByCost, BalancesTheLoadWithinFourThirdsOfTheBest) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const int ranks = 1 + trial % 7;
    std::vector<double> cost(1 + rng() % 40);
    for (double& c : cost) c = 1 + rng() % 100;
    const std::vector<int> owner = share_by_cost(cost, ranks);
    ASSERT_EQ(owner.size(), cost.size());
    std::vector<double> load(ranks, 0.0);
    double total = 0, biggest = 0;
    for (size_t i = 0; i < cost.size(); ++i) {
      ASSERT_GE(owner[i], 0);
      ASSERT_LT(owner[i], ranks);
      load[owner[i]] += cost[i], total += cost[i], biggest = std::max(biggest, cost[i]);
    }
    const double lower = std::max(total / ranks, biggest);  // no split does better
    EXPECT_LE(*std::max_element(load.begin(), load.end()), 4.0 / 3.0 * lower + 1e-9);
    EXPECT_EQ(share_by_cost(cost, ranks), owner);
  }
  // Not by count: one long item against many short ones.
  const std::vector<int> owner = share_by_cost({10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 2);
  EXPECT_EQ(std::count(owner.begin(), owner.end(), owner[0]), 1);
  EXPECT_THROW(share_by_cost({1}, 0), Error);
}

TEST(GatherInOrder, OneRankPutsResultsInOrder) {
  comm::Group one;
  const auto out = gather_in_order(one, {{2, "c"}, {0, "a"}, {1, ""}}, 3);
  EXPECT_EQ(out, (std::vector<std::string>{"a", "", "c"}));
  EXPECT_THROW(gather_in_order(one, {{0, "a"}}, 2), Error);            // missing
  EXPECT_THROW(gather_in_order(one, {{0, "a"}, {0, "b"}}, 2), Error);  // twice
  EXPECT_THROW(gather_in_order(one, {{3, "a"}}, 1), Error);            // out of range
}

}  // namespace parallama
