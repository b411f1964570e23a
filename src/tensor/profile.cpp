#include "tensor/profile.h"

#include <omp.h>

#include <chrono>

namespace parallama::prof {

namespace {

using Clock = std::chrono::steady_clock;

bool g_on = false;
Kind g_kind = Kind::other;
Part g_part = Part::other;
Clock::time_point g_mark, g_start;
Report g_rep;

// Charges the time since the last mark to the current (part, kind) and moves the mark.
void charge() {
  const auto t = Clock::now();
  const double dt = std::chrono::duration<double>(t - g_mark).count();
  g_mark = t;
  g_rep.kind_s[static_cast<int>(g_kind)] += dt;
  g_rep.part_s[static_cast<int>(g_part)] += dt;
  g_rep.cell_s[static_cast<int>(g_part)][static_cast<int>(g_kind)] += dt;
}

// Scopes count on the thread that runs the step, outside parallel regions: a kernel called from
// inside another's OpenMP loop (a GEMM within attention) is charged to the enclosing kind.
bool counts() {
  return g_on && omp_get_level() == 0;  // also with one thread, where no region is "active"
}

}  // namespace

const char* kind_name(Kind k) {
  static const char* names[] = {"gemm",      "gemm_lp",   "convert", "attention",
                                "rmsnorm",   "rope",      "swiglu",  "cross_entropy",
                                "embedding", "optimizer", "comm",    "other"};
  return names[static_cast<int>(k)];
}

const char* part_name(Part p) {
  static const char* names[] = {"embedding", "attention", "mlp", "head", "optimizer", "other"};
  return names[static_cast<int>(p)];
}

bool enabled() {
  return g_on;
}

void enable(bool on) {
  if (on && !g_on) reset();
  g_on = on;
}

void reset() {
  g_rep = Report{};
  g_kind = Kind::other;
  g_part = Part::other;
  g_start = g_mark = Clock::now();
}

KindScope::KindScope(Kind k) : active_(counts()), prev_(g_kind) {
  if (!active_) return;
  charge();
  g_kind = k;
  ++g_rep.calls[static_cast<int>(k)];
}

KindScope::~KindScope() {
  if (!active_ || !g_on) return;
  charge();
  g_kind = prev_;
}

PartScope::PartScope(Part p) : active_(counts()), prev_(g_part) {
  if (!active_) return;
  charge();
  g_part = p;
}

PartScope::~PartScope() {
  if (!active_ || !g_on) return;
  charge();
  g_part = prev_;
}

Report report() {
  if (g_on) charge();
  Report r = g_rep;
  r.wall_s = std::chrono::duration<double>(Clock::now() - g_start).count();
  return r;
}

}  // namespace parallama::prof
