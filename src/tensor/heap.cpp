#include "tensor/heap.h"

#include <climits>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace parallama {

bool retain_freed_memory() {
#if defined(__GLIBC__)
  // No block gets a mapping of its own (all come from the heap), and the heap's free top is kept.
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
#else
  return false;
#endif
}

}  // namespace parallama
