#pragma once
// Shared by the gtest programs that run under mpirun: bitwise comparisons of parameter-shaped
// buffers, optimizer state filled from the parameters, and a main() that reports once.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "comm/launcher.h"
#include "model/params.h"
#include "optim/optimizer.h"

namespace parallama::test {

// Optimizer moments that depend only on the parameter at the same place, so a slice of them is
// the same region of the whole: exp_avg = 2p + 1, exp_avg_sq = p².
inline void fill_state(Optimizer& opt, const ParamBuffer& p, int64_t steps = 7) {
  for (int64_t i = 0; i < p.size(); ++i) {
    opt.state(0)[i] = 2.0f * p.data()[i] + 1.0f;
    opt.state(1)[i] = p.data()[i] * p.data()[i];
  }
  opt.set_steps_taken(steps);
}

// Elements whose bits differ (0 when equal); a count, so that every rank runs the same
// collectives whatever the outcome.
inline int64_t differing(const ParamBuffer& a, const ParamBuffer& b) {
  if (a.size() != b.size()) return a.size() + b.size() + 1;
  int64_t n = 0;
  for (int64_t i = 0; i < a.size(); ++i) n += std::memcmp(a.data() + i, b.data() + i, 4) != 0;
  return n;
}

inline int64_t differing(const float* a, const float* b, int64_t n) {
  int64_t d = 0;
  for (int64_t i = 0; i < n; ++i) d += std::memcmp(a + i, b + i, 4) != 0;
  return d;
}

inline int64_t differing(const Optimizer& a, const Optimizer& b) {
  if (a.state_size() != b.state_size()) return a.state_size() + b.state_size() + 1;
  const int64_t n = a.state_size();
  return differing(a.state(0), b.state(0), n) + differing(a.state(1), b.state(1), n) +
         (a.steps_taken() != b.steps_taken());
}

// A directory every rank of the world shares (named after rank 0's pid), made empty before each
// test and removed after it.
class SharedDirTest : public ::testing::TestWithParam<bool> {
 protected:
  SharedDirTest(comm::Group*& world, const char* prefix) : world_(world), prefix_(prefix) {}
  void SetUp() override {
    int64_t id = ::getpid();
    world_->broadcast(&id, 1, 0, DType::I64);
    root_ = std::filesystem::temp_directory_path() / (prefix_ + std::to_string(id));
    if (world_->rank() == 0) std::filesystem::remove_all(root_);
    world_->barrier();
  }
  void TearDown() override {
    world_->barrier();
    if (world_->rank() == 0) std::filesystem::remove_all(root_);
  }
  std::string dir(const std::string& name) const { return (root_ / name).string(); }
  comm::Group*& world_;
  std::string prefix_;
  std::filesystem::path root_;
};

// Runs every test on every rank of the job (one process without mpirun), `world` pointing at
// the world group meanwhile; rank 0 alone prints, and the exit code is non-zero when any rank
// failed. `checked`: collectives are stamped and a rank out of step is named, not a hang.
inline int run_mpi_tests(int argc, char** argv, comm::Group*& world, bool checked) {
  ::testing::InitGoogleTest(&argc, argv);
  comm::Options opt;
  if (checked) opt.check_collectives = true, opt.timeout_s = 60;
  comm::Group w = comm::launched() ? comm::world(opt) : comm::Group();
  world = &w;
  if (w.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  const int64_t failed = w.sum(int64_t(rc != 0));
  world = nullptr;
  return failed ? 1 : 0;
}

}  // namespace parallama::test
