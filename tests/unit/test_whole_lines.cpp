// metrics.jsonl keeps whole lines only: a write that fails part way (here a file-size limit, a
// full disk in small) leaves the file as it was before that line, and plot skips a torn last line
// (from a crash) with a warning while refusing a corrupt line elsewhere.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "io/line_file.h"
#include "scratch_dir.h"
#include "test_util.h"
#include "train/metrics.h"
#include "train/plot.h"

namespace parallama {
namespace {

using test::error_of;

// Writes past `limit` bytes of any file fail (EFBIG) while this lives.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t limit) {
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old_);
    rlimit r = old_;
    r.rlim_cur = limit;
    setrlimit(RLIMIT_FSIZE, &r);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_{};
  void (*old_handler_)(int) = nullptr;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class WholeLines : public test::ScratchDirTest {};

TEST_F(WholeLines, AFailedAppendLeavesTheFileAsItWas) {
  io::LineFile f;
  ASSERT_EQ(f.open(file("x.jsonl")), 0);
  ASSERT_EQ(f.append("{\"a\": 1}"), 0);
  {
    FileSizeLimit limit(static_cast<rlim_t>(f.size()) + 5);  // half of the next line gets in
    EXPECT_EQ(f.append("{\"b\": 2, \"padding\": \"" + std::string(100, 'x') + "\"}"), EFBIG);
  }
  EXPECT_EQ(slurp(file("x.jsonl")), "{\"a\": 1}\n");
  ASSERT_EQ(f.append("{\"c\": 3}"), 0);  // the next line goes where the failed one began
  EXPECT_EQ(slurp(file("x.jsonl")), "{\"a\": 1}\n{\"c\": 3}\n");
}

TEST_F(WholeLines, MetricsKeepNoTornLineAfterAFailedWrite) {
  const std::string dir = dir_.string();
  std::string before;
  {
    Progress p(dir, 10, 0, 1);
    p.step({{"step", 1}, {"loss", 5.0}, {"lr", 1e-3}}, 64);
    before = slurp(dir + "/metrics.jsonl");
    ASSERT_FALSE(before.empty());
    FileSizeLimit limit(before.size() + 10);
    const std::string e = error_of([&] {
      p.step({{"step", 2}, {"loss", 4.0}, {"lr", 1e-3}, {"val_loss", 4.5}}, 64);
    });
    EXPECT_NE(e.find("cannot write " + dir + "/metrics.jsonl: File too large"), std::string::npos)
        << e;
  }
  EXPECT_EQ(slurp(dir + "/metrics.jsonl"), before);
}

TEST_F(WholeLines, PlotSkipsATornLastLineOnly) {
  const std::string dir = dir_.string();
  const std::string good = "{\"step\": 1, \"loss\": 5.5}\n{\"step\": 2, \"loss\": 4}\n";
  std::ofstream(dir + "/metrics.jsonl") << good << "{\"step\": 3, \"lo";
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(error_of([&] { plot_losses(dir); }), "");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "warning: " + dir +
                "/metrics.jsonl:3: the last line is incomplete (a write cut short); skipped\n");
  EXPECT_TRUE(std::filesystem::exists(dir + "/loss.svg"));
  // A corrupt line before the last is an error naming its line.
  std::ofstream(dir + "/metrics.jsonl") << "{\"step\": 1, \"lo\n" << good;
  EXPECT_NE(error_of([&] { plot_losses(dir); }).find("metrics.jsonl:1: not a metrics line"),
            std::string::npos);
  // So is a whole last line that is JSON but no metrics line.
  std::ofstream(dir + "/metrics.jsonl") << good << "{\"steps\": 3}\n";
  EXPECT_NE(error_of([&] { plot_losses(dir); }).find("metrics.jsonl:3: not a metrics line"),
            std::string::npos);
}

}  // namespace
}  // namespace parallama
