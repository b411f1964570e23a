#pragma once
// Where the time of a training step goes: wall time per kernel kind and per part of the model,
// collected only while enabled (`parallama bench --profile`); when disabled a scope costs one
// branch on a global flag. Scopes nest: time is charged to the innermost kind scope (a GEMM
// called by a kernel between its own parallel loops is charged to gemm, not twice) and,
// independently, to the innermost part scope. Time not inside any kind scope is charged to
// Kind::other, time outside any part scope to Part::other, so each table adds up to the
// measured wall time.
// Single-threaded use: the model and the trainer call scopes from one thread. A scope opened
// inside an OpenMP parallel region does not count, so a kernel called from inside another's
// parallel loop (flash attention's per-block GEMMs) is charged to the enclosing kind.
#include <array>
#include <cstdint>

namespace parallama::prof {

enum class Kind : int {
  gemm,       // fp32 matrix multiplies (oneDNN sgemm)
  gemm_lp,    // bf16 / fp16 matrix multiplies
  convert,    // fp32 <-> bf16 / fp16 conversion of weights, activations and gradients
  attention,  // the attention kernels, with the block GEMMs inside their parallel loops
  rmsnorm,
  rope,
  swiglu,
  cross_entropy,
  embedding,
  optimizer,  // AdamW / SGD updates
  comm,       // waiting in collectives (tensor-, data- or pipeline-parallel)
  other,
  count
};
enum class Part : int {
  embedding,
  attention,  // a layer's norm, q|k|v, RoPE, attention and o_proj
  mlp,        // a layer's norm, gate|up, SwiGLU and down_proj
  head,       // the final norm, the output head and the loss
  optimizer,  // gradient synchronization, clipping and the parameter update
  other,
  count
};
const char* kind_name(Kind k);
const char* part_name(Part p);

bool enabled();
void enable(bool on);
// Clears the totals and starts the wall clock of the report.
void reset();

class KindScope {
 public:
  explicit KindScope(Kind k);
  ~KindScope();
  KindScope(const KindScope&) = delete;
  KindScope& operator=(const KindScope&) = delete;

 private:
  bool active_;
  Kind prev_;
};

class PartScope {
 public:
  explicit PartScope(Part p);
  ~PartScope();
  PartScope(const PartScope&) = delete;
  PartScope& operator=(const PartScope&) = delete;

 private:
  bool active_;
  Part prev_;
};

struct Report {
  double wall_s = 0;  // since reset()
  std::array<double, static_cast<int>(Kind::count)> kind_s{};
  std::array<double, static_cast<int>(Part::count)> part_s{};
  // Seconds in each (part, kind) pair.
  std::array<std::array<double, static_cast<int>(Kind::count)>, static_cast<int>(Part::count)>
      cell_s{};
  std::array<int64_t, static_cast<int>(Kind::count)> calls{};
};
// The totals since reset(), with the time outside any scope charged to other.
Report report();

}  // namespace parallama::prof
