// The streaming safetensors writer (header first, then tensors in pieces) and the on-demand
// reader: round trips through pieces of every size, slices along every axis, misuse refused,
// and a reader that reads tensor bytes from the file when asked instead of holding the file.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "scratch_dir.h"
#include "tensor/bf16.h"
#include "tensor/error.h"
#include "test_util.h"

namespace parallama::io {
namespace {

namespace fs = std::filesystem;
using test::error_of;
using test::randn;

class SafeTensorsStream : public test::ScratchDirTest {};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> bf16_rounded(std::vector<float> v) {
  for (float& x : v) x = bf16_to_float(float_to_bf16(x));
  return v;
}

TEST_F(SafeTensorsStream, PiecesOfAnySizeRoundTrip) {
  const auto a = randn(3 * 5 * 7, 1), b = randn(11, 2), c = randn(300'000, 3);  // c: > buffer
  const std::vector<TensorDecl> decls = {
      {"a", {3, 5, 7}, DType::F32}, {"empty", {0, 2}}, {"b", {11}, DType::BF16}, {"c", {300'000}}};
  const std::string path = file("m.safetensors");
  SafeTensorsStreamWriter w(path, decls, {{"step", "7"}});
  EXPECT_TRUE(fs::exists(path + ".tmp"));
  for (int64_t i = 0; i < 105; i += 10) w.append("a", a.data() + i, std::min<int64_t>(10, 105 - i));
  w.append("empty", nullptr, 0);
  w.append("b", b.data(), 4);
  w.append("b", b.data() + 4, 7);
  w.append("c", c.data(), 1);
  w.append("c", c.data() + 1, 299'999);
  EXPECT_FALSE(fs::exists(path));  // nothing at the final path before commit()
  w.commit();
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const SafeTensorsReader r(path);
  EXPECT_EQ(r.metadata().at("step"), "7");
  ASSERT_EQ(r.tensors().size(), 4u);
  EXPECT_EQ(r.info("b").dtype, DType::BF16);
  std::vector<float> ga(a.size()), gb(b.size()), gc(c.size());
  r.read_f32("a", ga.data(), {3, 5, 7});
  r.read_f32("b", gb.data(), {11});
  r.read_f32("c", gc.data(), {300'000});
  EXPECT_TRUE(same_bits(ga, a));
  EXPECT_TRUE(same_bits(gb, bf16_rounded(b)));
  EXPECT_TRUE(same_bits(gc, c));
}

TEST_F(SafeTensorsStream, MisuseIsRefusedAndLeavesNoFile) {
  const auto x = randn(12, 4);
  const std::string path = file("m.safetensors");
  {
    SafeTensorsStreamWriter w(path, {{"x", {3, 4}}, {"y", {2}}});
    EXPECT_NE(error_of([&] {
                w.append("y", x.data(), 2);
              }).find("'y' written out of order (next is 'x')"),
              std::string::npos);
    EXPECT_NE(error_of([&] { w.append("z", x.data(), 1); }).find("no tensor 'z' was declared"),
              std::string::npos);
    EXPECT_NE(error_of([&] { w.append("x", x.data(), 13); }).find("cannot take 13 more elements"),
              std::string::npos);
    w.append("x", x.data(), 12);
    w.append("y", x.data(), 1);
    const std::string msg = error_of([&] { w.commit(); });
    EXPECT_NE(msg.find(path + ": tensor 'y' is incomplete (1 of 2 elements written)"),
              std::string::npos)
        << msg;
  }  // destroyed without a commit: the temporary file is gone, no file at path
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_FALSE(fs::exists(path));
  // Declarations are checked as the collecting writer checks its adds.
  EXPECT_NE(error_of([&] {
              SafeTensorsStreamWriter(path, {{"x", {1}}, {"x", {1}}});
            }).find("duplicate tensor name"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              SafeTensorsStreamWriter(path, {{"__metadata__", {1}}});
            }).find("reserved"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              SafeTensorsStreamWriter(path, {{"n", {2, -1}}});
            }).find("invalid shape"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(SafeTensorsStream, AnUncommittedRewriteKeepsTheOldFile) {
  const auto x = randn(4, 5);
  const std::string path = file("m.safetensors");
  SafeTensorsWriter old;
  old.add("x", x.data(), {4});
  old.write(path);
  {
    SafeTensorsStreamWriter w(path, {{"x", {4}}});
    w.append("x", x.data(), 2);
  }
  std::vector<float> got(4);
  SafeTensorsReader(path).read_f32("x", got.data(), {4});
  EXPECT_TRUE(same_bits(got, x));
}

// Slices along each axis equal the same region of the whole tensor, for F32 and BF16.
TEST_F(SafeTensorsStream, SlicesAlongEveryAxisMatchTheWholeTensor) {
  const Shape shape = {4, 6, 10};
  const auto t = randn(240, 6);
  SafeTensorsWriter w;
  w.add("f", t.data(), shape);
  w.add("h", t.data(), shape, DType::BF16);
  w.write(file("m.safetensors"));
  const SafeTensorsReader r(file("m.safetensors"));
  for (const char* name : {"f", "h"}) {
    std::vector<float> whole(240);
    r.read_f32(name, whole.data(), shape);
    for (int axis = 0; axis < 3; ++axis) {
      const int64_t dim = shape[axis], begin = dim / 2 - 1, count = dim / 2;
      int64_t outer = 1, inner = 1;
      for (int d = 0; d < axis; ++d) outer *= shape[d];
      for (int d = axis + 1; d < 3; ++d) inner *= shape[d];
      std::vector<float> got(outer * count * inner, -7.0f), want;
      r.read_f32_slice(name, got.data(), shape, axis, begin, count);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t k = 0; k < count * inner; ++k)
          want.push_back(whole[(o * dim + begin) * inner + k]);
      EXPECT_TRUE(same_bits(got, want)) << name << " axis " << axis;
    }
  }
  float dst[60];
  EXPECT_NE(error_of([&] {
              r.read_f32_slice("f", dst, shape, 1, 4, 3);
            }).find("has no slice [4, 7) along axis 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { r.read_f32_slice("f", dst, shape, 3, 0, 1); }).find("along axis 3"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              r.read_f32_slice("f", dst, {4, 6, 11}, 0, 0, 1);
            }).find("has shape (4, 6, 10) but expected (4, 6, 11)"),
            std::string::npos);
}

// The reader keeps the header, not the data: bytes changed on disk after opening are what a later
// read returns, a file cut short after opening is an error naming the file and the tensor, and
// the largest buffer it allocated is far smaller than one tensor.
TEST_F(SafeTensorsStream, ReadsTensorsFromTheFileOnDemand) {
  const int64_t n = 1 << 20;
  const auto a = randn(n, 7), b = randn(n, 8);
  const std::string path = file("m.safetensors");
  SafeTensorsWriter w;
  w.add("a", a.data(), {n});
  w.add("b", b.data(), {n}, DType::BF16);
  w.add("c", a.data(), {n});
  w.write(path);
  const SafeTensorsReader r(path);
  const uint64_t file_size = fs::file_size(path);
  std::vector<float> got(n);
  r.read_f32("a", got.data(), {n});
  r.read_f32("b", got.data(), {n});
  EXPECT_EQ(got, bf16_rounded(b));
  EXPECT_GT(r.peak_buffer_bytes(), 0u);
  EXPECT_LT(r.peak_buffer_bytes(), uint64_t(n));  // under half the smallest tensor (b: 2n bytes)
  EXPECT_LT(r.peak_buffer_bytes(), file_size / 10);

  const uint64_t at = r.info("a").begin + (file_size - r.info("c").end);  // data region start
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    const float v = 1234.5f;
    f.seekp(static_cast<std::streamoff>(at + 3 * sizeof(float)));
    f.write(reinterpret_cast<const char*>(&v), sizeof v);
  }
  r.read_f32("a", got.data(), {n});
  EXPECT_EQ(got[3], 1234.5f);
  EXPECT_EQ(got[4], a[4]);

  fs::resize_file(path, file_size - 100);
  const std::string msg = error_of([&] { r.read_f32("c", got.data(), {n}); });
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find("tensor 'c'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  // Reopened, the short file is refused up front.
  EXPECT_NE(error_of([&] { SafeTensorsReader again(path); }).find("end beyond data size"),
            std::string::npos);
}

}  // namespace
}  // namespace parallama::io
