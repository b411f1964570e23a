// Verse classification: labels of the 66 books, the chapter split, naive Bayes and macro-F1
// against hand-computed answers.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "finetune/metrics.h"
#include "finetune/verses.h"
#include "tensor/error.h"
#include "test_util.h"

namespace parallama::finetune {

TEST(ClassifyLabels, EveryBookHasItsTestamentAndGenre) {
  const auto& books = kjv_books();
  ASSERT_EQ(books.size(), 66u);
  // Counts per genre, in canonical order: 5 law, 12 history, 5 poetry and wisdom, 17 prophets,
  // 4 gospels, Acts, 21 epistles, Revelation.
  const int per_genre[8] = {5, 12, 5, 17, 4, 1, 21, 1};
  int b = 0;
  for (int g = 0; g < 8; ++g)
    for (int i = 0; i < per_genre[g]; ++i, ++b) {
      EXPECT_EQ(label_of(Task::genre, b), g) << books[b].abbrev;
      EXPECT_EQ(label_of(Task::testament, b), b < 39 ? 0 : 1) << books[b].abbrev;
    }
  EXPECT_EQ(b, 66);
  const std::map<std::string, std::string> spot = {{"Ge", "law"},
                                                   {"Deu", "law"},
                                                   {"Ruth", "history"},
                                                   {"Est", "history"},
                                                   {"Job", "poetry and wisdom"},
                                                   {"SSol", "poetry and wisdom"},
                                                   {"Lam", "prophets"},
                                                   {"Mal", "prophets"},
                                                   {"John", "gospels"},
                                                   {"Acts", "acts"},
                                                   {"Rom", "epistles"},
                                                   {"Jude", "epistles"},
                                                   {"Heb", "epistles"},
                                                   {"Rev", "revelation"}};
  const auto names = task_labels(Task::genre);
  for (const auto& [abbrev, genre] : spot) {
    const int i = book_index(abbrev);
    ASSERT_GE(i, 0) << abbrev;
    EXPECT_EQ(names[label_of(Task::genre, i)], genre) << abbrev;
  }
  EXPECT_EQ(task_labels(Task::testament)[label_of(Task::testament, book_index("Mal"))], "old");
  EXPECT_EQ(task_labels(Task::testament)[label_of(Task::testament, book_index("Mat"))], "new");
  std::set<std::string> unique;
  for (const Book& bk : books) unique.insert(bk.abbrev);
  EXPECT_EQ(unique.size(), 66u);
  EXPECT_EQ(book_index("Gen"), -1);
}

TEST(ClassifyLabels, VerseLinesParseAndBadOnesAreNamed) {
  const Verse v = parse_verse("1Sm17:49 And David put his hand in his bag", "f:3");
  EXPECT_EQ(v.ref, "1Sm17:49");
  EXPECT_EQ(kjv_books()[v.book].abbrev, std::string("1Sm"));
  EXPECT_EQ(v.chapter, 17);
  EXPECT_EQ(v.verse, 49);
  EXPECT_EQ(v.text, "And David put his hand in his bag");
  EXPECT_NE(test::error_of([] { parse_verse("Xyz1:1 text", "f:9"); }).find("f:9: unknown book"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { parse_verse("In the beginning", "f:1"); }), "");
  EXPECT_NE(test::error_of([] { parse_verse("Ge1:1 ", "f:1"); }), "");
  EXPECT_NE(test::error_of([] { parse_task("gospel"); }).find("choose testament or genre"),
            std::string::npos);
}

TEST(ClassifySplit, NoChapterOnBothSidesAndAboutTheFraction) {
  // Every verse of the Bible's chapters (up to 176 verses): the split depends on the chapter only.
  int chapters = 0, test_chapters = 0;
  for (const Book& b : kjv_books())
    for (int ch = 1; ch <= 150; ++ch) {
      const bool side = chapter_in_test(b.abbrev, ch, 0.1);
      for (int verse = 1; verse <= 176; verse += 25) {
        const Verse v = parse_verse(
            std::string(b.abbrev) + std::to_string(ch) + ":" + std::to_string(verse) + " text",
            "t");
        ASSERT_EQ(chapter_in_test(kjv_books()[v.book].abbrev, v.chapter, 0.1), side);
      }
      ++chapters, test_chapters += side;
    }
  const double share = static_cast<double>(test_chapters) / chapters;
  EXPECT_GT(share, 0.07);
  EXPECT_LT(share, 0.13);
  // Deterministic, and nested: a chapter in the 10% split is also in the 20% one.
  for (int ch = 1; ch <= 50; ++ch) {
    EXPECT_EQ(chapter_in_test("Psa", ch, 0.1), chapter_in_test("Psa", ch, 0.1));
    if (chapter_in_test("Psa", ch, 0.1)) {
      EXPECT_TRUE(chapter_in_test("Psa", ch, 0.2));
    }
  }
}

// Each genre keeps about its share of test chapters: with a hash whose top bits follow the book
// name, whole genres fell on one side (none of the gospels, Acts or Revelation in the test split).
TEST(ClassifySplit, EveryGenreAboutTheFraction) {
  std::vector<int> chapters(8, 0), test(8, 0);
  for (size_t b = 0; b < kjv_books().size(); ++b)
    for (int ch = 1; ch <= 28; ++ch) {  // Acts has 28 chapters
      const int g = label_of(Task::genre, static_cast<int>(b));
      ++chapters[g];
      test[g] += chapter_in_test(kjv_books()[b].abbrev, ch, 0.1);
    }
  for (int g = 0; g < 8; ++g) {
    const double share = static_cast<double>(test[g]) / chapters[g];
    EXPECT_GT(share, 0.03) << task_labels(Task::genre)[g];
    EXPECT_LT(share, 0.2) << task_labels(Task::genre)[g];
  }
}

TEST(ClassifyMetrics, MacroF1OfAHandComputedMatrix) {
  // truth \ predicted:  a  b  c
  //   a                 5  1  0
  //   b                 2  3  1
  //   c                 0  0  4
  Confusion c(3);
  c.counts = {{5, 1, 0}, {2, 3, 1}, {0, 0, 4}};
  EXPECT_EQ(c.total(), 16);
  EXPECT_DOUBLE_EQ(c.accuracy(), 12.0 / 16.0);
  // a: tp 5, fp 2, fn 1 → 10/13; b: tp 3, fp 1, fn 3 → 6/10; c: tp 4, fp 1, fn 0 → 8/9.
  EXPECT_NEAR(c.f1(0), 10.0 / 13.0, 1e-12);
  EXPECT_NEAR(c.f1(1), 0.6, 1e-12);
  EXPECT_NEAR(c.f1(2), 8.0 / 9.0, 1e-12);
  EXPECT_NEAR(c.macro_f1(), (10.0 / 13.0 + 0.6 + 8.0 / 9.0) / 3.0, 1e-12);
  // From label vectors; a class never seen nor predicted does not count.
  const Confusion d({0, 0, 1, 1}, {0, 1, 1, 1}, 4);
  EXPECT_DOUBLE_EQ(d.accuracy(), 0.75);
  EXPECT_NEAR(d.macro_f1(), (2.0 / 3.0 + 0.8) / 2.0, 1e-12);
  EXPECT_EQ(majority_label({2, 1, 2, 0, 1, 2}, 3), 2);
  const std::string svg = confusion_svg(c, {"a", "b", "c<"}, "t");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("c&lt;"), std::string::npos);
}

TEST(ClassifyBaselines, NaiveBayesOnAToySet) {
  // Vocabulary {0, 1, 2}; class 0: [0 0 1], [0]; class 1: [2 2 1].
  NaiveBayes nb(2, 3, 1.0);
  nb.fit({{0, 0, 1}, {0}, {2, 2, 1}}, {0, 0, 1});
  // Counts class 0: (3, 1, 0), 4 tokens; class 1: (0, 1, 2), 3 tokens; α = 1, V = 3.
  // P(t|0) = (4/7, 2/7, 1/7); P(t|1) = (1/6, 2/6, 3/6); priors 2/3, 1/3.
  const auto s = nb.log_scores({1, 2});
  EXPECT_NEAR(s[0], std::log(2.0 / 3) + std::log(2.0 / 7) + std::log(1.0 / 7), 1e-12);
  EXPECT_NEAR(s[1], std::log(1.0 / 3) + std::log(2.0 / 6) + std::log(3.0 / 6), 1e-12);
  EXPECT_EQ(nb.predict({1, 2}), 1);  // 2/3·2/49 ≈ 0.027 < 1/3·1/6 ≈ 0.056
  EXPECT_EQ(nb.predict({0}), 0);
  EXPECT_EQ(nb.predict({}), 0);  // the prior alone
}

}  // namespace parallama::finetune
