#pragma once
// JSON read with a bound on its nesting. nlohmann::json parses without recursion, but dumping,
// comparing or walking a value recurses once per level, so a file of a few hundred kilobytes of
// '[' overflows the stack later on. Files parallama reads nest a few levels; deeper is refused.
#include <nlohmann/json.hpp>
#include <string>

#include "tensor/error.h"

namespace parallama {

// Parses [begin, end) as JSON. Throws nlohmann::json::exception when it is not JSON, and Error
// ("nested more than N levels deep") when an object or array opens at depth max_depth or more.
template <class It>
nlohmann::json parse_json_bounded(It begin, It end, int max_depth) {
  using nlohmann::json;
  const json::parser_callback_t guard = [max_depth](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= max_depth)
      throw Error("nested more than " + std::to_string(max_depth) + " levels deep");
    return true;
  };
  return json::parse(begin, end, guard);
}

}  // namespace parallama
