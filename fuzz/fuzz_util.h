#pragma once
// What the fuzz harnesses share: a scratch directory of the process's own for the readers that
// take a path, and the report of a broken property (an abort, which libFuzzer records as a crash
// with the input that caused it).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace parallama::fuzz {

// Prints what went wrong (a broken property, or a scratch file that cannot be written) and
// aborts.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "\nfuzz harness: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// A directory of this process's own under $TMPDIR, else /dev/shm (in memory) where writable,
// else /tmp; removed at exit.
inline const std::string& scratch_dir() {
  // Never destroyed: the exit handler below runs after static destructors would have.
  static const std::string& dir = *[] {
    namespace fs = std::filesystem;
    const char* tmpdir = std::getenv("TMPDIR");
    const fs::path base = tmpdir && *tmpdir                 ? fs::path(tmpdir)
                          : ::access("/dev/shm", W_OK) == 0 ? fs::path("/dev/shm")
                                                            : fs::path("/tmp");
    const fs::path d = base / ("parallama-fuzz-" + std::to_string(::getpid()));
    std::error_code ec;
    fs::create_directories(d, ec);
    if (ec) fail("cannot create the scratch directory " + d.string());
    std::atexit([] {
      std::error_code ignored;
      fs::remove_all(scratch_dir(), ignored);
    });
    return new std::string(d.string());
  }();
  return dir;
}

// The path of `name` in the scratch directory.
inline std::string scratch_path(const std::string& name) {
  return scratch_dir() + "/" + name;
}

// Writes size bytes to path, replacing it.
inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size)) ||
      !f.flush())
    fail("cannot write the scratch file " + path);
}

}  // namespace parallama::fuzz
