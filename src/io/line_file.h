#pragma once
// A file of lines that only ever holds whole lines (metrics.jsonl): each append writes one line
// and its newline, and a write that fails part way (a full disk) is undone by cutting the file
// back to its length before that line, so a reader never meets half a line from a failed write.
#include <sys/types.h>

#include <string>
#include <string_view>

namespace parallama::io {

class LineFile {
 public:
  LineFile() = default;
  ~LineFile();
  LineFile(const LineFile&) = delete;
  LineFile& operator=(const LineFile&) = delete;

  // Creates path, or empties it. Returns 0, or the errno of the failure.
  int open(const std::string& path);
  // Writes line + '\n'. Returns 0, or the errno of the failure (EIO when the system gave none),
  // the file then cut back to the length it had before the line.
  int append(std::string_view line);
  off_t size() const { return size_; }

 private:
  int fd_ = -1;
  off_t size_ = 0;  // bytes of whole lines written
};

}  // namespace parallama::io
