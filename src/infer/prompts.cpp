#include "infer/prompts.h"

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>

#include "data/prepare.h"
#include "io/json_depth.h"
#include "tensor/error.h"

namespace parallama {

namespace {

bool blank(const std::string& s) {
  return s.find_first_not_of(" \t\r") == std::string::npos;
}

}  // namespace

std::vector<Prompt> read_prompts(const std::string& path) {
  if (std::filesystem::is_directory(path)) throw Error(path + " is a directory, not a prompt file");
  std::vector<int64_t> numbers;
  const std::vector<std::string> lines = read_text_lines(path, &numbers, true);
  std::vector<Prompt> out;
  std::optional<bool> jsonl;
  std::set<std::string> ids;
  for (size_t k = 0; k < lines.size(); ++k) {
    const std::string& line = lines[k];
    const int64_t n = numbers[k];
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
