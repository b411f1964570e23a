#pragma once
// The C library's heap, set for a training process that frees and allocates the same large
// blocks every step.

namespace parallama {

// Blocks given back with free() stay with the process for the next allocation, instead of going
// back to the kernel and coming back as fresh pages that each fault and are zeroed again. With
// glibc's defaults, a block of more than 128 KiB is mapped for its own allocation and unmapped on
// free, and the top of the heap is handed back once more than a few MB of it are free: under
// mpirun, Open MPI's non-blocking all-reduce takes a scratch block per gradient bucket and step,
// and faulting those pages in again cost each rank 0.3 s of a 2 s step on bench15m. Applies to
// the whole process; call it before the first large allocation. Returns false where the C
// library offers no such setting (then nothing changes).
bool retain_freed_memory();

}  // namespace parallama
