#pragma once
// Errors are values users can read: one line naming the problem and what to do.
#include <stdexcept>
#include <string>

namespace parallama {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace parallama
