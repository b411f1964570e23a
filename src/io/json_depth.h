#pragma once
// JSON read with a bound on its nesting. nlohmann::json parses without recursion, but dumping,
// comparing or walking a value recurses once per level, so a file of a few hundred kilobytes of
// '[' overflows the stack later on. Files parallama reads nest a few levels; deeper is refused.
//
// The depth is found by a scan of the text before it is parsed: a parser callback would do, but
// nlohmann's callback parser walks an object's members each time one of them closes, which makes
// an object of n members (a safetensors header, an index.json) take time n².
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "tensor/error.h"

namespace parallama {

struct JsonShape {
  int depth = 0;         // the deepest nesting of objects and arrays
  int64_t top_keys = 0;  // members of the outermost object, duplicates counted
};

// One pass over JSON text (not validated: the parser does that next).
inline JsonShape scan_json(std::string_view text) {
  JsonShape s;
  int depth = 0;
  bool in_string = false, escaped = false, string_at_top = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      string_at_top = depth == 1;
      continue;
    }
    if (c == ':' && string_at_top && depth == 1) ++s.top_keys, string_at_top = false;
    if (c == '{' || c == '[') s.depth = std::max(s.depth, ++depth);
    if (c == '}' || c == ']') --depth;
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t' && c != ':') string_at_top = false;
  }
  return s;
}

// Parses text as JSON. Throws nlohmann::json::exception when it is not JSON, and Error ("nested
// more than N levels deep") when an object or array opens at depth max_depth or more.
inline nlohmann::json parse_json_bounded(const std::string& text, int max_depth) {
  if (scan_json(text).depth > max_depth)
    throw Error("nested more than " + std::to_string(max_depth) + " levels deep");
  return nlohmann::json::parse(text);
}

template <class It>
nlohmann::json parse_json_bounded(It begin, It end, int max_depth) {
  return parse_json_bounded(std::string(begin, end), max_depth);
}

}  // namespace parallama
