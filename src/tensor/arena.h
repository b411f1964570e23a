#pragma once
// Aligned memory: an owning buffer, and an arena that carves one allocation into many
// tensors so that nothing is allocated inside a training step.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>

namespace parallama {

constexpr size_t kAlign = 64;

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

// An owning, 64-byte aligned, zero-initialised fp32 buffer.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) { resize(n); }
  void resize(size_t n) {
    size_t bytes = (n * sizeof(float) + kAlign - 1) / kAlign * kAlign;
    if (bytes == 0) bytes = kAlign;
    float* p = static_cast<float*>(std::aligned_alloc(kAlign, bytes));
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    ptr_.reset(p);
    size_ = n;
  }
  float* data() { return ptr_.get(); }
  const float* data() const { return ptr_.get(); }
  size_t size() const { return size_; }
  // Sets every value to 0: large buffers (a model's gradients before each step) on all threads.
  void zero();
  // Zeroes the buffer and hands its whole pages back to the operating system: they take no
  // memory until written again (then as fresh zero pages).
  void release();
  // Bytes of the buffer in physical memory now (whole pages; the edges count whole).
  size_t resident_bytes() const;

 private:
  std::unique_ptr<float, AlignedFree> ptr_;
  size_t size_ = 0;
};

// Two-phase arena: reserve() sizes (each rounded up to the alignment), commit() allocates
// once, then take() hands out the same sequence of pointers.
class Arena {
 public:
  static size_t round(size_t n) {
    return (n + kAlign / sizeof(float) - 1) / (kAlign / sizeof(float)) * (kAlign / sizeof(float));
  }
  void reserve(size_t n) { total_ += round(n); }
  void commit() {
    buf_.resize(total_);
    next_ = 0;
  }
  float* take(size_t n) {
    float* p = buf_.data() + next_;
    next_ += round(n);
    if (next_ > total_) throw std::logic_error("arena overflow");
    return p;
  }
  size_t floats() const { return total_; }
  // Runs carve(take) twice: first to size every piece, then, after the one allocation, to hand
  // out the pointers; carve must ask for the same sizes in the same order both times.
  template <class Carve>
  void plan(Carve&& carve) {
    carve([this](size_t n) -> float* {
      reserve(n);
      return nullptr;
    });
    commit();
    carve([this](size_t n) -> float* { return take(n); });
  }

 private:
  Buffer buf_;
  size_t total_ = 0, next_ = 0;
};

}  // namespace parallama
