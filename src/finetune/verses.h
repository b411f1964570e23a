#pragma once
// Verse classification data from the King James Bible (Debian's bible-kjv: `bible -f
// gen1:1-rev22:21` prints lines such as "Ge1:1 In the beginning God created ..."). The verse
// reference gives the label; the text without it is the input. Two tasks: testament (Old or
// New) and genre (eight groups of books). Verses are split by chapter, so neighbouring verses of
// one chapter never fall on both sides of the split.
#include <cstdint>
#include <string>
#include <vector>

namespace parallama::finetune {

enum class Task { testament, genre };
Task parse_task(const std::string& name);  // throws Error naming the choices
const char* task_name(Task t);

// One of the 66 books, as bible-kjv abbreviates it ("Ge", "1Sm", "Rev").
struct Book {
  const char* abbrev;
  int testament;  // 0 Old, 1 New
  int genre;      // index into task_labels(Task::genre)
};
const std::vector<Book>& kjv_books();       // in canonical order
int book_index(const std::string& abbrev);  // -1 when unknown

std::vector<std::string> task_labels(Task t);
int label_of(Task t, int book);

// A verse line split into its reference and text.
struct Verse {
  std::string ref;  // "Ge1:1"
  int book = -1, chapter = 0, verse = 0;
  std::string text;
};
// Throws Error naming `where` (file:line) unless the line is "<Book><chapter>:<verse> <text>" of
// a known book with non-empty text.
Verse parse_verse(const std::string& line, const std::string& where);

// Whether a chapter belongs to the test split: a hash of book and chapter, about `fraction` of
// the chapters; the same chapter always gets the same answer.
bool chapter_in_test(const std::string& book, int chapter, double fraction);

struct Example {
  std::string ref, text;
  int label = 0;
};

// The data directory: train.jsonl, test.jsonl (one {"ref", "text", "label"} per line) and
// labels.json ({"task", "labels": [...]}).
struct Dataset {
  std::string task;
  std::vector<std::string> labels;
  std::vector<Example> train, test;
};
// Throws Error with one line naming `source` and the label when a label appears twice (a label
// names one class: a classifier's answer would be ambiguous).
void check_distinct_labels(const std::vector<std::string>& labels, const std::string& source);

// Reads a data directory; throws Error naming the file and line of anything malformed, a label
// outside the list or repeated in it, or an empty split.
Dataset read_dataset(const std::string& dir);

// `prepare-classify`: the verses file → dir (written into a temporary sibling, then renamed into
// place). Returns the dataset written.
Dataset prepare_classify(Task task, const std::string& verses_file, const std::string& out_dir,
                         double test_fraction = 0.1);

}  // namespace parallama::finetune
