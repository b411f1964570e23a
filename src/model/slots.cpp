#include "model/slots.h"

#include <algorithm>
#include <string>

#include "tensor/error.h"

namespace parallama {

Slot& SlotPool::acquire(int c, int micro, const std::function<void(Slot&)>& make) {
  auto& pool = pools_[static_cast<size_t>(c)];
  for (auto& s : pool)
    if (s->micro == micro)
      throw Error("internal: micro-batch " + std::to_string(micro) + " is already in chunk " +
                  std::to_string(c));
  Slot* slot = nullptr;
  for (auto& s : pool)
    if (s->micro < 0) slot = s.get();
  if (!slot) {
    pool.push_back(std::make_unique<Slot>());
    slot = pool.back().get();
    make(*slot);
  }
  slot->micro = micro;
  held_bytes_ += slot->arena.floats() * sizeof(float);
  peak_bytes_ = std::max(peak_bytes_, held_bytes_);
  peak_in_flight_ = std::max(peak_in_flight_, ++in_flight_);
  return *slot;
}

Slot& SlotPool::find(int c, int micro) {
  for (auto& s : pools_[static_cast<size_t>(c)])
    if (s->micro == micro) return *s;
  throw Error("internal: backward of micro-batch " + std::to_string(micro) + " in chunk " +
              std::to_string(c) + " before its forward");
}

void SlotPool::release(Slot& s) {
  s.micro = -1;
  held_bytes_ -= s.arena.floats() * sizeof(float);
  --in_flight_;
}

void SlotPool::release_if_held(int c, int micro) {
  for (auto& s : pools_[static_cast<size_t>(c)])
    if (s->micro == micro) release(*s);
}

size_t SlotPool::bytes() const {
  size_t n = 0;
  for (const auto& pool : pools_)
    for (const auto& s : pool) n += s->arena.floats() * sizeof(float);
  return n;
}

void SlotPool::reset_peak() {
  peak_in_flight_ = in_flight_;
  peak_bytes_ = held_bytes_;
}

}  // namespace parallama
