#pragma once
// Enums that a setting names (train.precision, parallel.sync, ...): each has one table of its
// values and their names, `names(E{})` beside the enum (found by argument-dependent lookup), and
// reading, writing and listing the choices all go through it.
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace parallama {

template <class E>
struct Named {
  E value;
  const char* name;
};

// The name of v in E's table ("?" for a value the table lacks).
template <class E>
const char* name_of(E v) {
  for (const Named<E>& n : names(E{}))
    if (n.value == v) return n.name;
  return "?";
}

// The value named `text`, if E's table has it.
template <class E>
std::optional<E> value_named(std::string_view text) {
  for (const Named<E>& n : names(E{}))
    if (text == n.name) return n.value;
  return std::nullopt;
}

// Every name of E's table, in its order.
template <class E>
std::vector<std::string> all_names() {
  std::vector<std::string> out;
  for (const Named<E>& n : names(E{})) out.emplace_back(n.name);
  return out;
}

}  // namespace parallama
