#pragma once
// The message buffers (bytes) of the wire sums (wire_sum.cpp), kept between operations by the
// group that ran them: a step's buckets take the same sizes again, and a buffer handed back is
// taken again without new pages (which the kernel would map and zero during backward).
#include <cstdint>
#include <mutex>
#include <vector>

namespace parallama::comm {

class WireScratch {
 public:
  // A buffer of at least n elements (its contents are not cleared).
  std::vector<uint8_t> take(size_t n) {
    std::vector<uint8_t> b;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        b = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (b.size() < n) b.resize(n);
    return b;
  }
  void give_back(std::vector<uint8_t>&& b) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(b));
  }

 private:
  std::mutex mu_;
  std::vector<std::vector<uint8_t>> free_;
};

}  // namespace parallama::comm
