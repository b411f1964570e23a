#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "tensor/arena.h"
#include "tensor/heap.h"

namespace parallama {

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
// A freed 64 MB block stays in the heap: it was not a mapping of its own (which free() would have
// unmapped), and the heap's free bytes still hold it afterwards instead of trimming it away.
TEST(Heap, AFreedLargeBlockStaysWithTheProcess) {
  ASSERT_TRUE(retain_freed_memory());
  constexpr size_t kBytes = size_t{64} << 20;
  const size_t mapped_before = mallinfo2().hblkhd;
  char* p = static_cast<char*>(std::malloc(kBytes));
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, kBytes);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before);
  const auto freed_at = reinterpret_cast<uintptr_t>(p);
  std::free(p);
  EXPECT_GE(mallinfo2().fordblks, kBytes);
  // and the next allocation of that size reuses it
  char* q = static_cast<char*>(std::malloc(kBytes));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q), freed_at);
  std::free(q);
}
#else
TEST(Heap, AFreedLargeBlockStaysWithTheProcess) {
  GTEST_SKIP() << "needs glibc's own allocator (not a sanitizer's)";
}
#endif

// Buffer::zero splits a large buffer among the threads: every value goes to 0, the last partial
// piece too, at sizes below, at and above the split.
TEST(Heap, ZeroClearsEveryValueOfABuffer) {
  constexpr size_t kPiece = size_t{1} << 18;
  for (size_t n : {size_t{1}, size_t{1000}, 4 * kPiece, 5 * kPiece, 9 * kPiece + 7}) {
    Buffer b(n);
    std::fill(b.data(), b.data() + n, 1.5f);
    b.zero();
    EXPECT_EQ(std::count(b.data(), b.data() + n, 0.0f), static_cast<std::ptrdiff_t>(n)) << n;
  }
}

}  // namespace parallama
