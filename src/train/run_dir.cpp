#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tensor/error.h"

namespace fs = std::filesystem;

namespace parallama {

// N of a directory named step-N (N digits only), else -1.
long long step_of(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return std::stoll(name.substr(5));
}

namespace {

bool is_checkpoint(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "trainer.json", ec);
}

// The complete step-N checkpoints of a run directory.
std::vector<fs::path> checkpoints(const fs::path& run_dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(run_dir, ec))
    if (step_of(e.path().filename().string()) >= 0 && is_checkpoint(e.path()))
      out.push_back(e.path());
  return out;
}

}  // namespace

RunDirLock::RunDirLock(const std::string& out_dir) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create train.out_dir '" + out_dir + "': " + ec.message());
  const std::string path = (fs::path(out_dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder;
    if (fs::is_regular_file(path)) std::ifstream(path) >> holder;
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw Error("another run is training into " + out_dir +
                  (holder.empty() ? std::string() : " (process " + holder + ")") +
                  "; wait for it to end, or choose another train.out_dir");
    throw Error("cannot lock " + path + ": " + std::strerror(err));
  }
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  const std::string me = std::to_string(getpid()) + "@" + host + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
    // the holder's name is only for messages; the lock itself is held
  }
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

std::string latest_checkpoint(const std::string& run_dir) {
  const fs::path dir(run_dir);
  std::string name;
  std::error_code ec;  // only a regular file is read: a FIFO named latest would block
  if (fs::is_regular_file(dir / "latest", ec)) std::ifstream(dir / "latest") >> name;
  if (!name.empty() && step_of(name) >= 0 && is_checkpoint(dir / name))
    return (dir / name).string();
  long long best = -1;
  std::string found;
  for (const auto& p : checkpoints(dir)) {
    const long long s = step_of(p.filename().string());
    if (s > best) best = s, found = p.string();
  }
  return found;
}

std::string resolve_resume(const std::string& resume, const std::string& out_dir) {
  if (resume.empty()) return "";
  if (resume == "auto") return latest_checkpoint(out_dir);
  std::error_code ec;
  if (!fs::is_directory(resume, ec))
    throw Error("--resume " + resume + ": no such directory (give a checkpoint, a run directory, " +
                "or auto)");
  if (is_checkpoint(resume)) return resume;
  const std::string latest = latest_checkpoint(resume);
  if (latest.empty())
    throw Error("--resume " + resume +
                ": neither a checkpoint (no trainer.json) nor a run directory with one");
  return latest;
}

std::string claim_for_fresh_start(const std::string& out_dir, bool force) {
  const auto found = checkpoints(out_dir);
  if (found.empty()) return "";
  if (!force)
    throw Error("train.out_dir " + out_dir + " holds the checkpoints of another run (latest " +
                fs::path(latest_checkpoint(out_dir)).filename().string() +
                "); continue it with --resume auto, or start over with --force (deletes them)");
  std::string removed;
  for (const auto& p : found) {
    fs::remove_all(p);
    removed += (removed.empty() ? "" : ", ") + p.filename().string();
  }
  std::error_code ec;
  fs::remove(fs::path(out_dir) / "latest", ec);
  return removed;
}

int sweep_stale_checkpoint_dirs(const std::string& out_dir) {
  int removed = 0;
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return 0;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".step-", 0) == 0 &&
        (name.find(".tmp-") != std::string::npos || name.find(".old-") != std::string::npos))
      stale.push_back(e.path());
  }
  for (const auto& p : stale) {
    fs::remove_all(p, ec);
    if (!ec) ++removed;
  }
  return removed;
}

}  // namespace parallama
