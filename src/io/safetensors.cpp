#include "io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "tensor/bf16.h"
#include "tensor/error.h"

namespace parallama::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this code copies it as-is");

namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as the reference implementation
constexpr uint64_t kMaxElements = uint64_t{1} << 62;
constexpr int kMaxJsonDepth = 16;  // a valid header nests 3 deep; refuse pathological nesting

// 'name' with control characters escaped, so messages stay on one line.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "'";
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

std::string range_str(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

// Describes why `v` is not a non-negative integer, or returns "" if it is one.
std::string not_uint_reason(const json& v) {
  if (v.is_number_unsigned()) return "";
  if (v.is_number_integer()) return "is negative (" + v.dump() + ")";
  if (v.is_number_float()) return "is not an integer (" + one_line(v.dump()) + ")";
  return std::string("is a ") + v.type_name() + ", not an integer";
}

bool parse_dtype(const std::string& s, DType* out) {
  if (s != "F32" && s != "BF16") return false;
  *out = s == "F32" ? DType::F32 : DType::BF16;
  return true;
}

// Product of dims, or false if a dim is negative or the product exceeds kMaxElements.
bool checked_numel(const Shape& shape, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || static_cast<uint64_t>(d) > kMaxElements) return false;
    const uint64_t u = static_cast<uint64_t>(d);
    if (u != 0 && n > kMaxElements / u) return false;
    n *= u;
  }
  *out = n;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reader

void SafeTensorsReader::fail(const std::string& problem) const {
  throw Error(path_ + ": " + problem);
}

SafeTensorsReader::SafeTensorsReader(const std::string& path) : path_(path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (st.type() == std::filesystem::file_type::not_found) fail("cannot open: file does not exist");
  if (ec) fail("cannot open: " + ec.message());
  if (!std::filesystem::is_regular_file(st)) fail("cannot open: not a regular file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) fail("cannot determine file size: " + ec.message());
  if (size < 8) {
    fail("file is " + std::to_string(size) +
         " bytes, too short for a safetensors header (need at least 8)");
  }

  std::ifstream in(path, std::ios::binary);
  if (!in) fail(std::string("cannot open for reading: ") + std::strerror(errno));
  unsigned char prefix[8];
  if (!in.read(reinterpret_cast<char*>(prefix), 8)) fail("cannot read the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];
  if (n > kMaxHeaderBytes) {
    fail("header length " + std::to_string(n) + " is larger than the " +
         std::to_string(kMaxHeaderBytes) + "-byte limit (corrupt or not a safetensors file?)");
  }
  if (n > size - 8) {
    fail("header length " + std::to_string(n) + " exceeds file size (" + std::to_string(size) +
         " bytes; truncated or not a safetensors file?)");
  }

  bytes_.resize(size);
  std::memcpy(bytes_.data(), prefix, 8);
  in.read(bytes_.data() + 8, static_cast<std::streamsize>(size - 8));
  if (static_cast<uint64_t>(in.gcount()) != size - 8) {
    fail("read " + std::to_string(in.gcount()) + " of " + std::to_string(size - 8) +
         " bytes after the header length (file changed while reading?)");
  }
  data_start_ = 8 + n;
  data_size_ = size - data_start_;

  parse_header(bytes_.data() + 8, n);
  check_layout();
}

void SafeTensorsReader::parse_header(const char* text, uint64_t len) {
  std::set<std::string> seen;
  const json::parser_callback_t guard = [&](int depth, json::parse_event_t event, json& parsed) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth) {
      fail("header JSON is nested more than " + std::to_string(kMaxJsonDepth) + " levels deep");
    }
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) fail("header has duplicate key " + quoted(key));
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, text + len, guard);
  } catch (const json::exception& e) {
    fail("header is not valid JSON: " + one_line(e.what()));
  }
  if (!header.is_object()) {
    fail(std::string("header is not a JSON object (got ") + header.type_name() + ")");
  }
  for (const auto& [key, value] : header.items()) {
    if (key != "__metadata__") {
      parse_entry(key, value);
      continue;
    }
    if (!value.is_object()) {
      fail(std::string("__metadata__ must be a JSON object, got ") + value.type_name());
    }
    for (const auto& [k, v] : value.items()) {
      if (!v.is_string()) {
        fail("__metadata__ value for key " + quoted(k) + " must be a string, got " + v.type_name());
      }
      metadata_[k] = v.get<std::string>();
    }
  }
}

void SafeTensorsReader::parse_entry(const std::string& name, const json& entry) {
  const std::string what = "tensor " + quoted(name);
  if (!entry.is_object()) {
    fail(what + ": entry must be a JSON object, got " + entry.type_name());
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) fail(what + ": missing field '" + field + "'");
  }
  TensorInfo t;
  t.name = name;

  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) fail(what + ": dtype must be a string, got " + dtype.type_name());
  const auto& dtype_s = dtype.get_ref<const std::string&>();
  if (!parse_dtype(dtype_s, &t.dtype)) {
    fail(what + ": unsupported dtype " + quoted(dtype_s) + " (supported: F32, BF16)");
  }

  const json& shape = entry["shape"];
  if (!shape.is_array()) fail(what + ": shape must be an array, got " + shape.type_name());
  for (size_t i = 0; i < shape.size(); ++i) {
    const std::string reason = not_uint_reason(shape[i]);
    if (!reason.empty()) fail(what + ": shape dim " + std::to_string(i) + " " + reason);
    const uint64_t d = shape[i].get<uint64_t>();
    if (d > kMaxElements) fail(what + ": shape dim " + std::to_string(i) + " is too large");
    t.shape.push_back(static_cast<int64_t>(d));
  }
  uint64_t n = 0;
  if (!checked_numel(t.shape, &n)) {
    fail(what + ": shape " + shape_str(t.shape) + " has more than 2^62 elements");
  }

  const json& offs = entry["data_offsets"];
  if (!offs.is_array() || offs.size() != 2) {
    fail(what + ": data_offsets must be [begin, end], got " + one_line(offs.dump()));
  }
  for (size_t i = 0; i < 2; ++i) {
    const std::string reason = not_uint_reason(offs[i]);
    if (!reason.empty()) {
      fail(what + ": data_offsets " + (i == 0 ? "begin " : "end ") + reason);
    }
  }
  t.begin = offs[0].get<uint64_t>();
  t.end = offs[1].get<uint64_t>();
  if (t.begin > t.end) {
    fail(what + ": data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
         "] must have begin <= end");
  }
  if (t.end > data_size_) {
    fail(what + " data_offsets " + range_str(t.begin, t.end) + " end beyond data size " +
         std::to_string(data_size_) + " (file truncated?)");
  }
  const uint64_t need = n * dtype_size(t.dtype);  // n <= 2^62, so this cannot overflow
  if (t.end - t.begin != need) {
    fail(what + ": data_offsets " + range_str(t.begin, t.end) + " hold " +
         std::to_string(t.end - t.begin) + " bytes but " + dtype_name(t.dtype) + " shape " +
         shape_str(t.shape) + " needs " + std::to_string(need));
  }
  tensors_.push_back(std::move(t));
}

void SafeTensorsReader::check_layout() {
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  const TensorInfo* last = nullptr;  // the non-empty tensor reaching furthest so far
  for (const TensorInfo& t : tensors_) {
    if (t.begin == t.end) continue;  // empty tensors occupy no bytes
    if (last && t.begin < last->end) {
      fail("tensors " + quoted(last->name) + " " + range_str(last->begin, last->end) + " and " +
           quoted(t.name) + " " + range_str(t.begin, t.end) + " overlap");
    }
    if (!last || t.end > last->end) last = &t;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo& SafeTensorsReader::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) {
    fail("no tensor named " + quoted(name) + " (file has " + std::to_string(tensors_.size()) +
         " tensors)");
  }
  return tensors_[it->second];
}

void SafeTensorsReader::read_f32(const std::string& name, float* dst,
                                 const Shape& expected_shape) const {
  const TensorInfo& t = info(name);
  if (t.shape != expected_shape) {
    fail("tensor " + quoted(name) + " has shape " + shape_str(t.shape) + " but expected " +
         shape_str(expected_shape));
  }
  const size_t n = static_cast<size_t>((t.end - t.begin) / dtype_size(t.dtype));
  const char* src = bytes_.data() + data_start_ + t.begin;
  if (n == 0) return;
  if (t.dtype == DType::F32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  const auto* b = reinterpret_cast<const unsigned char*>(src);
  for (size_t i = 0; i < n; ++i) {
    dst[i] = bf16_to_float(static_cast<uint16_t>(b[2 * i] | (b[2 * i + 1] << 8)));
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

void SafeTensorsWriter::add(const std::string& name, const float* data, const Shape& shape,
                            DType dtype) {
  const std::string what = "safetensors writer: tensor " + quoted(name);
  if (name.empty()) throw Error("safetensors writer: tensor name must not be empty");
  if (name == "__metadata__") throw Error(what + ": name is reserved for metadata");
  if (index_.count(name)) throw Error(what + ": duplicate tensor name");
  uint64_t n = 0;
  if (!checked_numel(shape, &n)) {
    throw Error(what + ": invalid shape " + shape_str(shape) +
                " (negative dim or more than 2^62 elements)");
  }
  if (n > 0 && data == nullptr) throw Error(what + ": data is null");
  index_[name] = entries_.size();
  entries_.push_back({name, data, shape, dtype, n});
}

namespace {

// Owns a file descriptor for the temporary file; removes the file unless committed.
class TmpFile {
 public:
  explicit TmpFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create");
  }
  ~TmpFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  TmpFile(const TmpFile&) = delete;
  TmpFile& operator=(const TmpFile&) = delete;

  void write_all(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd_, c, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0 && errno == EINTR) continue;
      if (w == 0) errno = EIO;
      if (w <= 0) fail("write failed");
      c += w;
      n -= static_cast<size_t>(w);
    }
  }
  void commit(const std::string& final_path) {
    if (::fsync(fd_) != 0) fail("fsync failed");
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail("close failed");
    if (std::rename(path_.c_str(), final_path.c_str()) != 0) {
      fail("cannot rename to " + final_path);
    }
    committed_ = true;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path_ + ": " + what + ": " + std::strerror(errno));
  }
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

void SafeTensorsWriter::write(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    const uint64_t bytes = e.numel * dtype_size(e.dtype);
    header[e.name] = {{"dtype", dtype_name(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": cannot encode header (names and metadata must be valid UTF-8): " +
                one_line(e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data region starts 8-byte aligned

  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i)
    prefix[i] = static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  TmpFile out(path + ".tmp");
  out.write_all(prefix.data(), prefix.size());
  out.write_all(text.data(), text.size());
  std::vector<uint16_t> buf;
  for (const Entry& e : entries_) {
    if (e.numel == 0) continue;
    if (e.dtype == DType::F32) {
      out.write_all(e.data, e.numel * sizeof(float));
      continue;
    }
    constexpr uint64_t kChunk = uint64_t{1} << 20;
    buf.resize(std::min(e.numel, kChunk));
    for (uint64_t i = 0; i < e.numel; i += kChunk) {
      const uint64_t m = std::min(kChunk, e.numel - i);
      for (uint64_t j = 0; j < m; ++j) buf[j] = float_to_bf16(e.data[i + j]);
      out.write_all(buf.data(), m * sizeof(uint16_t));
    }
  }
  out.commit(path);
}

}  // namespace parallama::io
