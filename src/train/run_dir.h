#pragma once
// A run directory (train.out_dir) belongs to one run: its checkpoints step-N/, `latest` (the name
// of the newest), metrics.jsonl and summary.json. A new run does not start in a directory that
// holds another run's checkpoints, two processes never train into it at once (a lock that the
// kernel releases when the holder exits, however it exits), and the temporary directories of a
// checkpoint that a signal or a full disk interrupted are swept away at the next start.
#include <string>

namespace parallama {

// The lock on a run directory: flock on out_dir/.lock, held while the object lives. Throws Error
// naming the process that holds it.
class RunDirLock {
 public:
  explicit RunDirLock(const std::string& out_dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int fd_ = -1;
};

// N of a directory named step-N (N digits only), else -1.
long long step_of(const std::string& name);

// The newest complete checkpoint of a run directory: the one `latest` names, or, if that is
// missing or incomplete, the complete step-N with the largest N; "" when there is none.
std::string latest_checkpoint(const std::string& run_dir);

// The checkpoint directory that --resume names: "" (none), a checkpoint (it holds trainer.json),
// a run directory (its latest checkpoint), or "auto" (out_dir's latest, "" when it has none).
// Throws Error for a path that is neither.
std::string resolve_resume(const std::string& resume, const std::string& out_dir);

// For a fresh start (no checkpoint to resume): throws Error when out_dir holds checkpoints, naming
// --resume and --force; with force, deletes them (and `latest`) instead. Returns what it deleted.
std::string claim_for_fresh_start(const std::string& out_dir, bool force);

// Removes the temporary and set-aside directories of checkpoints (.step-N.tmp-PID,
// .step-N.old-PID) that an interrupted save left. Call it holding the lock: no live run writes
// there then. Returns how many it removed.
int sweep_stale_checkpoint_dirs(const std::string& out_dir);

}  // namespace parallama
