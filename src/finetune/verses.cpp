#include "finetune/verses.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/prepare.h"
#include "io/checkpoint.h"
#include "io/paths.h"
#include "tensor/error.h"
#include "tensor/hash.h"

namespace fs = std::filesystem;

namespace parallama::finetune {

namespace {

enum Genre { kLaw, kHistory, kPoetry, kProphets, kGospels, kActs, kEpistles, kRevelation };

}  // namespace

Task parse_task(const std::string& name) {
  if (name == "testament") return Task::testament;
  if (name == "genre") return Task::genre;
  throw Error("unknown classification task '" + name + "' (choose testament or genre)");
}

const char* task_name(Task t) {
  return t == Task::testament ? "testament" : "genre";
}

const std::vector<Book>& kjv_books() {
  static const std::vector<Book> books = {
      {"Ge", 0, kLaw},         {"Exo", 0, kLaw},        {"Lev", 0, kLaw},
      {"Num", 0, kLaw},        {"Deu", 0, kLaw},        {"Josh", 0, kHistory},
      {"Jdgs", 0, kHistory},   {"Ruth", 0, kHistory},   {"1Sm", 0, kHistory},
      {"2Sm", 0, kHistory},    {"1Ki", 0, kHistory},    {"2Ki", 0, kHistory},
      {"1Chr", 0, kHistory},   {"2Chr", 0, kHistory},   {"Ezra", 0, kHistory},
      {"Neh", 0, kHistory},    {"Est", 0, kHistory},    {"Job", 0, kPoetry},
      {"Psa", 0, kPoetry},     {"Prv", 0, kPoetry},     {"Eccl", 0, kPoetry},
      {"SSol", 0, kPoetry},    {"Isa", 0, kProphets},   {"Jer", 0, kProphets},
      {"Lam", 0, kProphets},   {"Eze", 0, kProphets},   {"Dan", 0, kProphets},
      {"Hos", 0, kProphets},   {"Joel", 0, kProphets},  {"Amos", 0, kProphets},
      {"Obad", 0, kProphets},  {"Jonah", 0, kProphets}, {"Mic", 0, kProphets},
      {"Nahum", 0, kProphets}, {"Hab", 0, kProphets},   {"Zep", 0, kProphets},
      {"Hag", 0, kProphets},   {"Zec", 0, kProphets},   {"Mal", 0, kProphets},
      {"Mat", 1, kGospels},    {"Mark", 1, kGospels},   {"Luke", 1, kGospels},
      {"John", 1, kGospels},   {"Acts", 1, kActs},      {"Rom", 1, kEpistles},
      {"1Cor", 1, kEpistles},  {"2Cor", 1, kEpistles},  {"Gal", 1, kEpistles},
      {"Eph", 1, kEpistles},   {"Phi", 1, kEpistles},   {"Col", 1, kEpistles},
      {"1Th", 1, kEpistles},   {"2Th", 1, kEpistles},   {"1Tim", 1, kEpistles},
      {"2Tim", 1, kEpistles},  {"Titus", 1, kEpistles}, {"Phmn", 1, kEpistles},
      {"Heb", 1, kEpistles},   {"Jas", 1, kEpistles},   {"1Pet", 1, kEpistles},
      {"2Pet", 1, kEpistles},  {"1Jn", 1, kEpistles},   {"2Jn", 1, kEpistles},
      {"3Jn", 1, kEpistles},   {"Jude", 1, kEpistles},  {"Rev", 1, kRevelation},
  };
  return books;
}

int book_index(const std::string& abbrev) {
  const auto& books = kjv_books();
  for (size_t i = 0; i < books.size(); ++i)
    if (abbrev == books[i].abbrev) return static_cast<int>(i);
  return -1;
}

std::vector<std::string> task_labels(Task t) {
  if (t == Task::testament) return {"old", "new"};
  return {"law",     "history", "poetry and wisdom", "prophets",
          "gospels", "acts",    "epistles",          "revelation"};
}

int label_of(Task t, int book) {
  const Book& b = kjv_books().at(static_cast<size_t>(book));
  return t == Task::testament ? b.testament : b.genre;
}

Verse parse_verse(const std::string& line, const std::string& where) {
  auto bad = [&](const std::string& why) -> Error {
    return Error(where + ": " + why +
                 " (expected lines of `bible -f gen1:1-rev22:21`, such as \"Ge1:1 In the "
                 "beginning ...\")");
  };
  const size_t space = line.find(' ');
  if (space == std::string::npos || space == 0) throw bad("no verse reference");
  Verse v;
  v.ref = line.substr(0, space);
  const size_t colon = v.ref.find(':');
  if (colon == std::string::npos) throw bad("reference '" + v.ref + "' has no ':'");
  // The book is the reference up to the digits of the chapter (a book may start with a digit).
  size_t digits = colon;
  while (digits > 1 && std::isdigit(static_cast<unsigned char>(v.ref[digits - 1]))) --digits;
  const std::string book = v.ref.substr(0, digits);
  const std::string chapter = v.ref.substr(digits, colon - digits);
  const std::string verse = v.ref.substr(colon + 1);
  v.book = book_index(book);
  if (v.book < 0) throw bad("unknown book '" + book + "'");
  auto number = [&](const std::string& s) {
    if (s.empty() || s.size() > 4 || s.find_first_not_of("0123456789") != std::string::npos)
      throw bad("reference '" + v.ref + "' is not BookChapter:Verse");
    return std::stoi(s);
  };
  v.chapter = number(chapter), v.verse = number(verse);
  v.text = line.substr(space + 1);
  if (v.text.find_first_not_of(" \t") == std::string::npos) throw bad("verse without text");
  return v;
}

bool chapter_in_test(const std::string& book, int chapter, double fraction) {
  uint64_t h = fnv1a64(book + " " + std::to_string(chapter));
  // FNV-1a alone leaves the top bits of similar short strings alike (whole books fell on one
  // side); the finalizer of splitmix64 mixes every bit into every other.
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  h ^= h >> 31;
  // The top 53 bits as a uniform number in [0, 1).
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0) < fraction;
}

void check_distinct_labels(const std::vector<std::string>& labels, const std::string& source) {
  std::set<std::string> seen;
  for (const std::string& l : labels)
    if (!seen.insert(l).second)
      throw Error(source + ": the label \"" + l + "\" appears twice; labels must be distinct");
}

namespace {

std::vector<Example> read_jsonl(const std::string& path, size_t num_labels) {
  if (!fs::exists(path))
    throw Error("cannot read " + path + ": make it with parallama prepare-classify");
  std::ifstream in = open_input(path, "data file", kMaxTextBytes);
  std::vector<Example> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    const std::string where = path + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw Error(where + ": not a JSON object");
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string() || !j.contains("label") ||
        !j["label"].is_number_integer())
      throw Error(where + ": needs \"text\" (a string) and \"label\" (an integer)");
    Example e;
    e.text = j["text"].get<std::string>();
    e.ref = j.contains("ref") && j["ref"].is_string() ? j["ref"].get<std::string>() : "";
    const int64_t label = j["label"].get<int64_t>();
    if (label < 0 || label >= static_cast<int64_t>(num_labels))
      throw Error(where + ": label " + std::to_string(label) + " is not one of the " +
                  std::to_string(num_labels) + " labels of labels.json");
    e.label = static_cast<int>(label);
    out.push_back(std::move(e));
  }
  if (out.empty()) throw Error(path + ": no examples");
  return out;
}

std::string to_jsonl(const std::vector<Example>& xs) {
  std::string s;
  for (const Example& e : xs)
    s += nlohmann::json{{"ref", e.ref}, {"text", e.text}, {"label", e.label}}.dump() + "\n";
  return s;
}

}  // namespace

Dataset read_dataset(const std::string& dir) {
  const std::string lpath = (fs::path(dir) / "labels.json").string();
  if (!fs::exists(lpath))
    throw Error("cannot read " + lpath + ": make it with parallama prepare-classify");
  std::ifstream in = open_input(lpath, "labels file", kMaxConfigBytes);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    throw Error(lpath + ": not JSON");
  }
  if (!j.is_object() || !j.contains("labels") || !j["labels"].is_array() || j["labels"].size() < 2)
    throw Error(lpath + ": needs \"labels\", a list of at least two names");
  Dataset d;
  for (const auto& l : j["labels"]) {
    if (!l.is_string()) throw Error(lpath + ": labels must be strings");
    d.labels.push_back(l.get<std::string>());
  }
  check_distinct_labels(d.labels, lpath);
  d.task = j.contains("task") && j["task"].is_string() ? j["task"].get<std::string>() : "";
  d.train = read_jsonl((fs::path(dir) / "train.jsonl").string(), d.labels.size());
  d.test = read_jsonl((fs::path(dir) / "test.jsonl").string(), d.labels.size());
  return d;
}

Dataset prepare_classify(Task task, const std::string& verses_file, const std::string& out_dir,
                         double test_fraction) {
  if (!(test_fraction > 0.0 && test_fraction < 1.0))
    throw Error("--test-fraction must lie strictly between 0 and 1");
  constexpr const char* kFiles[] = {"labels.json", "train.jsonl", "test.jsonl"};
  check_output_dir("--out", out_dir, {std::begin(kFiles), std::end(kFiles)}, {verses_file});
  const std::vector<std::string> lines = read_text_lines(verses_file);
  Dataset d;
  d.task = task_name(task);
  d.labels = task_labels(task);
  check_distinct_labels(d.labels, "prepare-classify --task " + d.task);
  for (size_t i = 0; i < lines.size(); ++i) {
    const Verse v = parse_verse(lines[i], verses_file + ":" + std::to_string(i + 1));
    Example e{v.ref, v.text, label_of(task, v.book)};
    (chapter_in_test(kjv_books()[v.book].abbrev, v.chapter, test_fraction) ? d.test : d.train)
        .push_back(std::move(e));
  }
  if (d.train.empty() || d.test.empty())
    throw Error(verses_file + ": too few chapters to split into train and test");
  // Into --out beside whatever else it holds, each file whole (labels.json last: the set is read
  // from it).
  const fs::path out(out_dir);
  try {
    fs::create_directories(out);
  } catch (const fs::filesystem_error& e) {
    throw Error("cannot make " + out_dir + ": " + e.code().message());
  }
  write_file_atomically((out / "train.jsonl").string(), to_jsonl(d.train));
  write_file_atomically((out / "test.jsonl").string(), to_jsonl(d.test));
  const nlohmann::json labels = {{"task", d.task}, {"labels", d.labels}};
  write_file_atomically((out / "labels.json").string(), labels.dump(1) + "\n");
  return d;
}

}  // namespace parallama::finetune
