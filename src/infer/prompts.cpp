#include "infer/prompts.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include "io/json_depth.h"
#include "tensor/error.h"
#include "tensor/utf8.h"

namespace parallama {

namespace {

bool blank(const std::string& s) {
  return s.find_first_not_of(" \t\r") == std::string::npos;
}

}  // namespace

std::vector<Prompt> read_prompts(const std::string& path) {
  if (std::filesystem::is_directory(path)) throw Error(path + " is a directory, not a prompt file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read prompt file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  if (all.rfind("\xEF\xBB\xBF", 0) == 0) all.erase(0, 3);  // a byte-order mark
  if (const size_t bad = first_invalid_utf8(all); bad != std::string::npos)
    throw Error(path + ": not UTF-8 text (byte offset " + std::to_string(bad) + ")");
  if (all.find('\0') != std::string::npos) throw Error(path + ": a binary file, not prompts");
  std::vector<Prompt> out;
  std::optional<bool> jsonl;
  std::set<std::string> ids;
  std::istringstream lines(all);
  std::string line;
  for (int64_t n = 1; std::getline(lines, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (blank(line)) continue;
    const std::string where = path + ":" + std::to_string(n) + ": ";
    if (!jsonl) jsonl = line[line.find_first_not_of(" \t")] == '{';
    Prompt p;
    p.line = n;
    if (!*jsonl) {
      p.id = n, p.text = line;
    } else {
      nlohmann::json j;
      try {
        j = parse_json_bounded(line.begin(), line.end(), 16);
      } catch (const std::exception& e) {
        throw Error(where + "not a JSON object: " + e.what());
      }
      if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
        throw Error(where + "each line must be an object with a \"prompt\" string");
      p.text = j["prompt"].get<std::string>();
      p.id = n;
      if (j.contains("id")) {
        if (!j["id"].is_string() && !j["id"].is_number_integer())
          throw Error(where + "\"id\" must be a string or an integer");
        p.id = j["id"];
      }
      if (j.contains("seed")) {
        if (!j["seed"].is_number_unsigned())
          throw Error(where + "\"seed\" must be an integer of at least 0");
        p.seed = j["seed"].get<uint64_t>();
      }
    }
    if (blank(p.text)) throw Error(where + "the prompt is empty");
    if (!ids.insert(p.id.dump()).second) throw Error(where + "id " + p.id.dump() + " repeats");
    out.push_back(std::move(p));
  }
  if (out.empty()) throw Error(path + ": no prompts (the file is empty or blank)");
  return out;
}

std::vector<std::vector<int64_t>> plan_batches(const std::vector<int64_t>& prompt_tokens,
                                               int64_t batch) {
  if (batch < 1) throw Error("--batch must be at least 1");
  std::vector<int64_t> order(prompt_tokens.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return prompt_tokens[static_cast<size_t>(a)] > prompt_tokens[static_cast<size_t>(b)];
  });
  std::vector<std::vector<int64_t>> out;
  for (size_t i = 0; i < order.size(); i += static_cast<size_t>(batch))
    out.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(i),
                     order.begin() + static_cast<std::ptrdiff_t>(
                                         std::min(order.size(), i + static_cast<size_t>(batch))));
  return out;
}

}  // namespace parallama
