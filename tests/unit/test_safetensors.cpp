// safetensors reader and writer: round trips, layout of written files, and one test per kind of
// malformed file, each built byte by byte and required to fail with a specific one-line Error.
#include <gtest/gtest.h>

#include <unistd.h>
#include "scratch_dir.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "io/safetensors.h"
#include "tensor/bf16.h"
#include "tensor/error.h"

namespace parallama::io {
namespace {

namespace fs = std::filesystem;
using test::error_of;

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

std::string f32_bytes(std::initializer_list<float> v) {
  std::string s;
  for (float f : v) {
    const uint32_t u = bits(f);
    for (int i = 0; i < 4; ++i) s += static_cast<char>(u >> (8 * i));
  }
  return s;
}

std::string bf16_bytes(std::initializer_list<uint16_t> v) {
  std::string s;
  for (uint16_t h : v) {
    s += static_cast<char>(h & 0xff);
    s += static_cast<char>(h >> 8);
  }
  return s;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class SafeTensors : public test::ScratchDirTest {
 protected:
  std::string write_raw(const std::string& bytes, const std::string& name = "t.safetensors") {
    const std::string p = file(name);
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  // A file with a correct header length followed by `header` and `data`.
  std::string write_file(const std::string& header, const std::string& data = "") {
    return write_raw(le64(header.size()) + header + data);
  }

  // The message of the Error that opening `path` throws; fails the test if it does not throw or
  // if the message does not start with the path or spans several lines.
  static std::string open_error(const std::string& path) {
    try {
      SafeTensorsReader r(path);
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      return msg;
    }
    ADD_FAILURE() << "no Error for " << path;
    return "";
  }
  void expect_header_error(const std::string& header, const std::string& data,
                           const std::string& substring) {
    const std::string msg = open_error(write_file(header, data));
    EXPECT_NE(msg.find(substring), std::string::npos)
        << "header: " << header << "\nmessage: " << msg << "\nexpected: " << substring;
  }
};

// --- Round trips -------------------------------------------------------------------------------

TEST_F(SafeTensors, RoundTripF32IsBitExact) {
  auto a = random_floats(3 * 5 * 7, 1);
  a[0] = -0.0f;
  a[1] = std::numeric_limits<float>::infinity();
  a[2] = std::numeric_limits<float>::denorm_min();
  a[3] = std::numeric_limits<float>::quiet_NaN();
  const auto b = random_floats(11, 2);
  SafeTensorsWriter w;
  w.add("layers.0.w", a.data(), {3, 5, 7});
  w.add("b", b.data(), {11}, DType::F32);
  w.write(file("m.safetensors"));

  SafeTensorsReader r(file("m.safetensors"));
  ASSERT_EQ(r.tensors().size(), 2u);
  EXPECT_EQ(r.tensors()[0].name, "layers.0.w");  // order added = order in the data region
  EXPECT_EQ(r.tensors()[1].name, "b");
  EXPECT_EQ(r.info("layers.0.w").shape, (Shape{3, 5, 7}));
  EXPECT_EQ(r.info("layers.0.w").dtype, DType::F32);
  EXPECT_EQ(r.info("b").begin, 3u * 5 * 7 * 4);
  EXPECT_EQ(r.path(), file("m.safetensors"));
  std::vector<float> got(a.size());
  r.read_f32("layers.0.w", got.data(), {3, 5, 7});
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(bits(got[i]), bits(a[i])) << i;
  std::vector<float> got_b(b.size());
  r.read_f32("b", got_b.data(), {11});
  EXPECT_EQ(got_b, b);
}

TEST_F(SafeTensors, RoundTripBF16RoundsToNearestEven) {
  auto a = random_floats(3 * 5 * 7, 3);
  a[0] = 1.00390625f;  // 1 + 2^-8: halfway between 1 and 1 + 2^-7, ties to the even 1.0
  a[1] = 1.01171875f;  // 1 + 3 * 2^-8: halfway, ties to the even 1 + 2^-6
  a[2] = 3.0f;         // exactly representable
  a[3] = -2.5f;
  SafeTensorsWriter w;
  w.add("x", a.data(), {3, 5, 7}, DType::BF16);
  w.write(file("m.safetensors"));

  SafeTensorsReader r(file("m.safetensors"));
  EXPECT_EQ(r.info("x").dtype, DType::BF16);
  EXPECT_EQ(r.info("x").end - r.info("x").begin, 3u * 5 * 7 * 2);
  std::vector<float> got(a.size());
  r.read_f32("x", got.data(), {3, 5, 7});
  EXPECT_EQ(got[0], 1.0f);
  EXPECT_EQ(got[1], 1.015625f);
  EXPECT_EQ(got[2], 3.0f);
  EXPECT_EQ(got[3], -2.5f);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(got[i], bf16_to_float(float_to_bf16(a[i]))) << i;
    ASSERT_LE(std::fabs(got[i] - a[i]), std::fabs(a[i]) * (1.0f / 256)) << i;
  }
  // The stored bytes are the little-endian bf16 bit patterns: 3.0f is 0x4040.
  const std::string bytes = slurp(file("m.safetensors"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(static_cast<unsigned char>(bytes[8 + n + 4]), 0x40);
  EXPECT_EQ(static_cast<unsigned char>(bytes[8 + n + 5]), 0x40);
}

TEST_F(SafeTensors, MetadataRoundTrips) {
  const float x = 7.0f;
  SafeTensorsWriter w;
  w.set_metadata({{"format", "pt"}, {"step", "1200"}, {"note", "a \"quoted\" value"}});
  w.add("x", &x, {1});
  w.write(file("m.safetensors"));
  SafeTensorsReader r(file("m.safetensors"));
  EXPECT_EQ(r.metadata(), (std::map<std::string, std::string>{
                              {"format", "pt"}, {"step", "1200"}, {"note", "a \"quoted\" value"}}));
  EXPECT_FALSE(r.has("__metadata__"));
  EXPECT_EQ(r.tensors().size(), 1u);
}

TEST_F(SafeTensors, ScalarEmptyAndMixedShapes) {
  const float scalar = 42.5f;
  const auto odd = random_floats(3 * 5 * 7, 4);
  const auto v = random_floats(5, 5);
  SafeTensorsWriter w;
  w.add("scalar", &scalar, {});
  w.add("empty", nullptr, {0, 4});
  w.add("odd", odd.data(), {3, 5, 7}, DType::BF16);
  w.add("v", v.data(), {5});
  w.write(file("m.safetensors"));

  SafeTensorsReader r(file("m.safetensors"));
  EXPECT_EQ(r.info("scalar").shape, Shape{});
  EXPECT_EQ(r.info("empty").shape, (Shape{0, 4}));
  float got = 0;
  r.read_f32("scalar", &got, {});
  EXPECT_EQ(got, 42.5f);
  r.read_f32("empty", nullptr, {0, 4});
  std::vector<float> got_odd(odd.size()), got_v(5);
  r.read_f32("odd", got_odd.data(), {3, 5, 7});
  r.read_f32("v", got_v.data(), {5});
  for (size_t i = 0; i < odd.size(); ++i)
    EXPECT_EQ(got_odd[i], bf16_to_float(float_to_bf16(odd[i])));
  EXPECT_EQ(got_v, v);  // an F32 tensor after a BF16 one of odd length (unaligned) reads fine
}

TEST_F(SafeTensors, WrittenFileIsAlignedAndLeavesNoTemporary) {
  const float x[3] = {1, 2, 3};
  const std::string path = file("m.safetensors");
  for (size_t len = 1; len <= 8; ++len) {  // header lengths in every residue mod 8
    SafeTensorsWriter w;
    w.set_metadata({{"k", "v"}});
    w.add("a", x, {3});
    w.add(std::string(len, 'b'), x, {3}, DType::BF16);
    w.write(path);  // overwrites the previous iteration's file
    const std::string bytes = slurp(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
    EXPECT_EQ((8 + n) % 8, 0u) << len;
    ASSERT_EQ(bytes.size(), 8 + n + 12 + 6);
    EXPECT_EQ(bytes[8], '{');
    const auto header = nlohmann::json::parse(bytes.substr(8, n));  // trailing spaces are allowed
    EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json::array({0, 12}));
    EXPECT_EQ(header[std::string(len, 'b')]["data_offsets"], nlohmann::json::array({12, 18}));
    EXPECT_EQ(header[std::string(len, 'b')]["dtype"], "BF16");
    EXPECT_EQ(header["__metadata__"]["k"], "v");
    EXPECT_FALSE(fs::exists(path + ".tmp"));
  }
}

TEST_F(SafeTensors, EmptyWriterWritesAValidFile) {
  SafeTensorsWriter().write(file("m.safetensors"));
  SafeTensorsReader r(file("m.safetensors"));
  EXPECT_TRUE(r.tensors().empty());
  EXPECT_TRUE(r.metadata().empty());
}

// A file laid out as Python's safetensors writes it: keys in the JSON in an order different from
// the data, a BF16 and an F32 tensor, and "__metadata__".
TEST_F(SafeTensors, ReadsHandWrittenPythonStyleFile) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("model.norm.weight":{"dtype":"F32","shape":[3],"data_offsets":[8,20]},)"
      R"("model.embed":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}})";
  // bf16: 1.0 = 0x3f80, -2.0 = 0xc000, 0.5 = 0x3f00, 3.0 = 0x4040
  const std::string data =
      bf16_bytes({0x3f80, 0xc000, 0x3f00, 0x4040}) + f32_bytes({0.25f, -1.5f, 1e-3f});
  const std::string path = write_file(header, data);

  SafeTensorsReader r(path);
  ASSERT_EQ(r.tensors().size(), 2u);
  EXPECT_EQ(r.tensors()[0].name, "model.embed");  // ordered by data offset, not by key
  EXPECT_EQ(r.tensors()[1].name, "model.norm.weight");
  EXPECT_EQ(r.metadata().at("format"), "pt");
  EXPECT_TRUE(r.has("model.embed"));
  EXPECT_FALSE(r.has("model.embed.weight"));
  std::vector<float> e(4), n(3);
  r.read_f32("model.embed", e.data(), {2, 2});
  r.read_f32("model.norm.weight", n.data(), {3});
  EXPECT_EQ(e, (std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f}));
  EXPECT_EQ(n, (std::vector<float>{0.25f, -1.5f, 1e-3f}));
}

// --- Usage errors --------------------------------------------------------------------------------

TEST_F(SafeTensors, ShapeMismatchOnReadIsAnError) {
  const auto x = random_floats(12, 6);
  SafeTensorsWriter w;
  w.add("x", x.data(), {3, 4});
  w.write(file("m.safetensors"));
  SafeTensorsReader r(file("m.safetensors"));
  std::vector<float> dst(12, -1.0f);
  std::string msg = error_of([&] { r.read_f32("x", dst.data(), {4, 3}); });
  EXPECT_NE(msg.find(file("m.safetensors") + ": tensor 'x' has shape (3, 4) but expected (4, 3)"),
            std::string::npos)
      << msg;
  msg = error_of([&] { r.read_f32("x", dst.data(), {12}); });
  EXPECT_NE(msg.find("(3, 4) but expected (12)"), std::string::npos) << msg;
  msg = error_of([&] { r.read_f32("x", dst.data(), {3, 5}); });
  EXPECT_NE(msg.find("(3, 4) but expected (3, 5)"), std::string::npos) << msg;
  EXPECT_EQ(dst, std::vector<float>(12, -1.0f));  // nothing written on error
}

TEST_F(SafeTensors, MissingTensorNamesFileAndTensor) {
  const float x = 1;
  SafeTensorsWriter w;
  w.add("x", &x, {1});
  w.write(file("m.safetensors"));
  SafeTensorsReader r(file("m.safetensors"));
  float dst;
  const std::string msg = error_of([&] { r.read_f32("y", &dst, {1}); });
  EXPECT_NE(msg.find(file("m.safetensors") + ": no tensor named 'y'"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { r.info("y"); }), "");
}

TEST_F(SafeTensors, WriterRejectsBadAdds) {
  const float x[2] = {1, 2};
  SafeTensorsWriter w;
  w.add("x", x, {2});
  EXPECT_NE(error_of([&] { w.add("x", x, {2}); }).find("duplicate tensor name"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add("__metadata__", x, {2}); }).find("reserved"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add("", x, {2}); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([&] {
              w.add("n", x, {2, -1});
            }).find("invalid shape (2, -1)"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              w.add("big", x, {1 << 30, 1 << 30, 1 << 30});
            }).find("2^62"),
            std::string::npos);
  EXPECT_NE(error_of([&] { w.add("null", nullptr, {2}); }).find("null"), std::string::npos);
}

TEST_F(SafeTensors, WriteFailureIsAnErrorNamingThePath) {
  const float x = 1;
  SafeTensorsWriter w;
  w.add("x", &x, {1});
  const std::string path = file("no/such/dir/m.safetensors");
  const std::string msg = error_of([&] { w.write(path); });
  EXPECT_NE(msg.find(path + ".tmp: cannot create"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(path));

  SafeTensorsWriter bad_name;
  bad_name.add("caf\xe9", &x, {1});  // Latin-1, not UTF-8
  const std::string p2 = file("m.safetensors");
  EXPECT_NE(error_of([&] { bad_name.write(p2); }).find(p2 + ": cannot encode header"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(p2));
  EXPECT_FALSE(fs::exists(p2 + ".tmp"));
}

// --- Malformed files -----------------------------------------------------------------------------

TEST_F(SafeTensors, RejectsMissingAndTooShortFiles) {
  EXPECT_NE(open_error(file("absent.safetensors")).find("does not exist"), std::string::npos);
  EXPECT_NE(open_error(dir_.string()).find("not a regular file"), std::string::npos);
  EXPECT_NE(open_error(write_raw("")).find("file is 0 bytes, too short"), std::string::npos);
  EXPECT_NE(open_error(write_raw(std::string("\x02\0\0\0\0", 5), "five"))
                .find("file is 5 bytes, too short"),
            std::string::npos);
}

TEST_F(SafeTensors, RejectsBadHeaderLength) {
  const std::string hdr = "{}";
  EXPECT_NE(open_error(write_raw(le64(3) + hdr)).find("header length 3 exceeds file size"),
            std::string::npos);
  EXPECT_NE(open_error(write_raw(le64(100'000'001) + hdr)).find("100000000-byte limit"),
            std::string::npos);
  EXPECT_NE(open_error(write_raw(le64(~uint64_t{0}) + hdr)).find("100000000-byte limit"),
            std::string::npos);
  EXPECT_NE(open_error(write_raw(le64(0))).find("not valid JSON"), std::string::npos);
}

TEST_F(SafeTensors, RejectsHeaderThatIsNotAJsonObject) {
  expect_header_error(R"({"x": {"dtype": "F32",)", "", "header is not valid JSON");
  expect_header_error("{\"\xff\xfe\": 1}", "", "header is not valid JSON");  // not UTF-8
  expect_header_error(R"({"a": 1} trailing)", "", "header is not valid JSON");
  expect_header_error(R"([1, 2])", "", "header is not a JSON object (got array)");
  expect_header_error(R"("text")", "", "header is not a JSON object (got string)");
  expect_header_error(std::string(100, '[') + std::string(100, ']'), "", "nested more than");
  expect_header_error(R"({"a": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]})", "", "nested more than");
}

TEST_F(SafeTensors, RejectsMalformedEntries) {
  const std::string d12(12, '\0');
  expect_header_error(R"({"x": 5})", d12, "tensor 'x': entry must be a JSON object, got number");
  expect_header_error(R"({"x": {"shape": [3], "data_offsets": [0, 12]}})", d12,
                      "tensor 'x': missing field 'dtype'");
  expect_header_error(R"({"x": {"dtype": "F32", "data_offsets": [0, 12]}})", d12,
                      "tensor 'x': missing field 'shape'");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3]}})", d12,
                      "tensor 'x': missing field 'data_offsets'");
  expect_header_error(R"({"x": {"dtype": 1, "shape": [3], "data_offsets": [0, 12]}})", d12,
                      "dtype must be a string, got number");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": 3, "data_offsets": [0, 12]}})", d12,
                      "shape must be an array, got number");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": {"a": 1}, "data_offsets": [0, 12]}})", d12,
                      "shape must be an array, got object");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": "0-12"}})", d12,
                      "data_offsets must be [begin, end]");
}

TEST_F(SafeTensors, RejectsBadShapes) {
  const std::string d12(12, '\0');
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3, -1], "data_offsets": [0, 12]}})", d12,
                      "tensor 'x': shape dim 1 is negative (-1)");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 12]}})", d12,
                      "shape dim 0 is not an integer (1.5)");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3.0], "data_offsets": [0, 12]}})", d12,
                      "shape dim 0 is not an integer");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": ["3"], "data_offsets": [0, 12]}})", d12,
                      "shape dim 0 is a string, not an integer");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [null], "data_offsets": [0, 12]}})", d12,
                      "shape dim 0 is a null, not an integer");
  // Products that overflow 64 bits, or exceed 2^62, are refused rather than wrapped.
  expect_header_error(
      R"({"x": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", "",
      "shape (4294967296, 4294967296) has more than 2^62 elements");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [2147483648, 2147483648, 2147483648, 0],)"
                      R"( "data_offsets": [0, 0]}})",
                      "", "has more than 2^62 elements");
  expect_header_error(
      R"({"x": {"dtype": "F32", "shape": [9223372036854775808], "data_offsets": [0, 0]}})", "",
      "shape dim 0 is too large");
  expect_header_error(
      R"({"x": {"dtype": "F32", "shape": [99999999999999999999], "data_offsets": [0, 0]}})", "",
      "shape dim 0 is not an integer");
}

TEST_F(SafeTensors, RejectsUnsupportedDtypes) {
  const std::string d(16, '\0');
  expect_header_error(R"({"x": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})", d,
                      "tensor 'x': unsupported dtype 'I64' (supported: F32, BF16, F16)");
  expect_header_error(R"({"x": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}})", d,
                      "unsupported dtype 'F64' (supported: F32, BF16, F16)");
  expect_header_error(R"({"x": {"dtype": "f32", "shape": [2], "data_offsets": [0, 8]}})", d,
                      "unsupported dtype 'f32'");
}

TEST_F(SafeTensors, RejectsBadDataOffsets) {
  const std::string d12(12, '\0');
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0]}})", d12,
                      "tensor 'x': data_offsets must be [begin, end], got [0]");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12, 24]}})", d12,
                      "data_offsets must be [begin, end], got [0,12,24]");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [-4, 8]}})", d12,
                      "data_offsets begin is negative (-4)");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12.5]}})", d12,
                      "data_offsets end is not an integer");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, "12"]}})", d12,
                      "data_offsets end is a string");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [0], "data_offsets": [12, 0]}})", d12,
                      "data_offsets [12, 0] must have begin <= end");
}

TEST_F(SafeTensors, RejectsTruncatedData) {
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [4, 6], "data_offsets": [0, 96]}})",
                      std::string(64, '\0'),
                      "tensor 'x' data_offsets [0, 96) end beyond data size 64 (file truncated?)");
  expect_header_error(
      R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551615]}})",
      std::string(4, '\0'), "end beyond data size 4");
}

TEST_F(SafeTensors, RejectsSizeThatDisagreesWithShape) {
  const std::string d(16, '\0');
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", d,
                      "tensor 'x': data_offsets [0, 8) hold 8 bytes but F32 shape (3) needs 12");
  expect_header_error(R"({"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}})", d,
                      "hold 16 bytes but BF16 shape (2, 2) needs 8");
  expect_header_error(R"({"x": {"dtype": "F32", "shape": [], "data_offsets": [0, 0]}})", d,
                      "hold 0 bytes but F32 shape () needs 4");
}

TEST_F(SafeTensors, RejectsOverlappingTensors) {
  const std::string d(24, '\0');
  expect_header_error(R"({"b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},)"
                      R"( "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
                      d, "tensors 'a' [0, 16) and 'b' [8, 24) overlap");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                      R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
                      d, "tensors 'a' [0, 16) and 'b' [0, 16) overlap");
  // Contained within a larger tensor, after a tensor in between.
  expect_header_error(R"({"big": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]},)"
                      R"( "small": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]}})",
                      d, "tensors 'big' [0, 24) and 'small' [16, 20) overlap");
  // Adjacent tensors, empty tensors and gaps are fine.
  const std::string ok =
      write_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                 R"( "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [4, 4]},)"
                 R"( "b": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]},)"
                 R"( "c": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}})",
                 d);
  EXPECT_EQ(SafeTensorsReader(ok).tensors().size(), 4u);
}

TEST_F(SafeTensors, RejectsBadMetadataAndDuplicateKeys) {
  expect_header_error(R"({"__metadata__": ["a"]})", "",
                      "__metadata__ must be a JSON object, got array");
  expect_header_error(R"({"__metadata__": {"step": 5}})", "",
                      "__metadata__ value for key 'step' must be a string, got number");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                      R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                      std::string(8, '\0'), "header has duplicate key 'a'");
  expect_header_error("{\"bad\\nname\": 5}", "", "tensor 'bad\\x0aname': entry must be");
}

}  // namespace
}  // namespace parallama::io
