#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

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
  std::free(p);
  EXPECT_GE(mallinfo2().fordblks, kBytes);
  // and the next allocation of that size reuses it
  char* q = static_cast<char*>(std::malloc(kBytes));
  EXPECT_EQ(q, p);
  std::free(q);
}
#else
TEST(Heap, AFreedLargeBlockStaysWithTheProcess) {
  GTEST_SKIP() << "needs glibc's own allocator (not a sanitizer's)";
}
#endif

}  // namespace parallama
