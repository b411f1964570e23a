#include "io/line_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace parallama::io {

LineFile::~LineFile() {
  if (fd_ >= 0) ::close(fd_);
}

int LineFile::open(const std::string& path) {
  if (fd_ >= 0) ::close(fd_);
  size_ = 0;
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  return fd_ < 0 ? errno : 0;
}

int LineFile::append(std::string_view line) {
  if (fd_ < 0) return EBADF;
  std::string text(line);
  text += '\n';
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    const int err = n < 0 && errno ? errno : EIO;
    // Cut off what of the line did reach the file, and write the next line where this one began.
    if (::ftruncate(fd_, size_) == 0) ::lseek(fd_, size_, SEEK_SET);
    return err;
  }
  size_ += static_cast<off_t>(text.size());
  return 0;
}

}  // namespace parallama::io
