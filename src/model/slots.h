#pragma once
// The activations of the micro-batches in flight through a model's chunks: each micro-batch keeps
// its activations in a slot of its own, from its forward until its backward; slots are allocated
// when first needed and reused, so steady training allocates nothing.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "model/layers.h"
#include "tensor/arena.h"

namespace parallama {

struct Slot {
  Arena arena;
  int micro = -1;           // the micro-batch whose activations these are; -1: free
  std::vector<float*> res;  // layers + 1 residual streams (N, C): each layer's input, then output
  std::vector<LayerActs> acts;
  HeadActs head{};  // the head chunk's
  std::vector<int32_t> tokens, targets;
};

class SlotPool {
 public:
  explicit SlotPool(int chunks) : pools_(static_cast<size_t>(chunks)) {}
  // A free slot of chunk c for `micro` (carved by make(slot) when a new one is needed). Throws
  // Error when the micro-batch already holds one.
  Slot& acquire(int c, int micro, const std::function<void(Slot&)>& make);
  // Throws Error when the micro-batch holds none ("backward before its forward").
  Slot& find(int c, int micro);
  void release(Slot& s);
  // Frees the slot of `micro` in chunk c if it holds one (a forward that had no backward).
  void release_if_held(int c, int micro);
  size_t bytes() const;  // of every slot
  size_t peak_bytes() const { return peak_bytes_; }
  int peak_in_flight() const { return peak_in_flight_; }
  void reset_peak();

 private:
  std::vector<std::vector<std::unique_ptr<Slot>>> pools_;  // per chunk
  int in_flight_ = 0, peak_in_flight_ = 0;
  size_t held_bytes_ = 0, peak_bytes_ = 0;
};

}  // namespace parallama
