#include "io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "io/json_depth.h"
#include "tensor/bf16.h"
#include "tensor/error.h"
#include "tensor/f16.h"

namespace parallama::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this code copies it as-is");

namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as the reference implementation
constexpr uint64_t kMaxElements = uint64_t{1} << 62;
constexpr int kMaxJsonDepth = 16;  // a valid header nests 3 deep; refuse pathological nesting
constexpr uint64_t kStageElements = uint64_t{1} << 18;  // BF16, F16 read in pieces of 512 KiB
constexpr size_t kWriteBuffer = size_t{1} << 20;        // the stream writer's buffer

// 'name' with control characters escaped, so messages stay on one line.
std::string quote(const std::string& s) {
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
  for (DType t : {DType::F32, DType::BF16, DType::F16})
    if (s == dtype_name(t)) return *out = t, true;
  return false;
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

  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(std::string("cannot open for reading: ") + std::strerror(errno));
  try {
    unsigned char prefix[8];
    read_bytes(0, prefix, 8, "the 8-byte header length");
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
    std::vector<char> header(n);
    note_buffer(n);
    read_bytes(8, header.data(), n, "the header");
    data_start_ = 8 + n;
    data_size_ = size - data_start_;
    parse_header(header.data(), n);
    check_layout();
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

SafeTensorsReader::~SafeTensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

void SafeTensorsReader::read_bytes(uint64_t offset, void* dst, uint64_t n,
                                   const std::string& what) const {
  char* p = static_cast<char*>(dst);
  uint64_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd_, p + done, std::min<uint64_t>(n - done, uint64_t{1} << 30),
                              static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail("cannot read " + what + ": " + std::strerror(errno));
    if (r == 0) {
      fail("read " + std::to_string(done) + " of " + std::to_string(n) + " bytes of " + what +
           " (file truncated or changed since it was opened?)");
    }
    done += static_cast<uint64_t>(r);
  }
}

void SafeTensorsReader::note_buffer(uint64_t bytes) const {
  uint64_t seen = peak_buffer_.load();
  while (bytes > seen && !peak_buffer_.compare_exchange_weak(seen, bytes)) {
  }
}

void SafeTensorsReader::parse_header(const char* text, uint64_t len) {
  // The depth and the number of keys by a scan (io/json_depth.h: linear time); the name of a
  // duplicate key, when there is one, from a second parse that watches the keys.
  const std::string_view body(text, len);
  const JsonShape shape = scan_json(body);
  if (shape.depth > kMaxJsonDepth)
    fail("header JSON is nested more than " + std::to_string(kMaxJsonDepth) + " levels deep");
  json header;
  try {
    header = json::parse(body);
  } catch (const json::exception& e) {
    fail("header is not valid JSON: " + one_line(e.what()));
  }
  if (header.is_object() && static_cast<int64_t>(header.size()) != shape.top_keys) {
    std::set<std::string> seen;
    const json::parser_callback_t find = [&](int depth, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!seen.insert(key).second) fail("header has duplicate key " + quote(key));
      }
      return true;
    };
    const json whole = json::parse(body, find);  // throws at the first repeated key
    (void)whole;
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
        fail("__metadata__ value for key " + quote(k) + " must be a string, got " + v.type_name());
      }
      metadata_[k] = v.get<std::string>();
    }
  }
}

void SafeTensorsReader::parse_entry(const std::string& name, const json& entry) {
  const std::string what = "tensor " + quote(name);
  if (name.empty()) fail("a tensor has an empty name");  // as the writer requires
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
    fail(what + ": unsupported dtype " + quote(dtype_s) + " (supported: F32, BF16, F16)");
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
      fail("tensors " + quote(last->name) + " " + range_str(last->begin, last->end) + " and " +
           quote(t.name) + " " + range_str(t.begin, t.end) + " overlap");
    }
    if (!last || t.end > last->end) last = &t;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo& SafeTensorsReader::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) {
    fail("no tensor named " + quote(name) + " (file has " + std::to_string(tensors_.size()) +
         " tensors)");
  }
  return tensors_[it->second];
}

void SafeTensorsReader::shape_must_be(const TensorInfo& t, const Shape& expected) const {
  if (t.shape != expected) {
    fail("tensor " + quote(t.name) + " has shape " + shape_str(t.shape) + " but expected " +
         shape_str(expected));
  }
}

void SafeTensorsReader::read_elements(const TensorInfo& t, uint64_t first, uint64_t n, float* dst,
                                      std::vector<uint16_t>& stage) const {
  const uint64_t at = data_start_ + t.begin + first * dtype_size(t.dtype);
  const std::string what = "tensor " + quote(t.name);
  if (t.dtype == DType::F32) {
    read_bytes(at, dst, n * sizeof(float), what);
    return;
  }
  for (uint64_t i = 0; i < n; i += stage.size()) {
    const uint64_t m = std::min<uint64_t>(stage.size(), n - i);
    read_bytes(at + i * sizeof(uint16_t), stage.data(), m * sizeof(uint16_t), what);
    if (t.dtype == DType::BF16)  // little-endian host
      for (uint64_t j = 0; j < m; ++j) dst[i + j] = bf16_to_float(stage[j]);
    else
      for (uint64_t j = 0; j < m; ++j) dst[i + j] = f16_to_float(stage[j]);
  }
}

void SafeTensorsReader::read_f32(const std::string& name, float* dst,
                                 const Shape& expected_shape) const {
  const TensorInfo& t = info(name);
  shape_must_be(t, expected_shape);
  const uint64_t n = (t.end - t.begin) / dtype_size(t.dtype);
  if (n == 0) return;
  std::vector<uint16_t> stage(t.dtype != DType::F32 ? std::min(n, kStageElements) : 0);
  note_buffer(stage.size() * sizeof(uint16_t));
  read_elements(t, 0, n, dst, stage);
}

void SafeTensorsReader::read_f32_slice(const std::string& name, float* dst,
                                       const Shape& expected_shape, int axis, int64_t begin,
                                       int64_t count) const {
  const TensorInfo& t = info(name);
  shape_must_be(t, expected_shape);
  const int rank = static_cast<int>(t.shape.size());
  if (axis < 0 || axis >= rank || begin < 0 || count < 0 || begin + count > t.shape[axis]) {
    fail("tensor " + quote(name) + " of shape " + shape_str(t.shape) + " has no slice [" +
         std::to_string(begin) + ", " + std::to_string(begin + count) + ") along axis " +
         std::to_string(axis));
  }
  uint64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= static_cast<uint64_t>(t.shape[d]);
  for (int d = axis + 1; d < rank; ++d) inner *= static_cast<uint64_t>(t.shape[d]);
  const uint64_t dim = static_cast<uint64_t>(t.shape[axis]), run = count * inner;
  if (outer == 0 || run == 0) return;
  std::vector<uint16_t> stage(t.dtype != DType::F32 ? std::min(run, kStageElements) : 0);
  note_buffer(stage.size() * sizeof(uint16_t));
  // One contiguous run of the file per index of the leading dims (one run in all for axis 0).
  for (uint64_t o = 0; o < outer; ++o)
    read_elements(t, (o * dim + static_cast<uint64_t>(begin)) * inner, run, dst + o * run, stage);
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

// Checks one tensor of a file to be written and returns its element count.
uint64_t check_decl(const std::string& name, const Shape& shape,
                    const std::map<std::string, size_t>& index) {
  const std::string what = "safetensors writer: tensor " + quote(name);
  if (name.empty()) throw Error("safetensors writer: tensor name must not be empty");
  if (name == "__metadata__") throw Error(what + ": name is reserved for metadata");
  if (index.count(name)) throw Error(what + ": duplicate tensor name");
  uint64_t n = 0;
  if (!checked_numel(shape, &n)) {
    throw Error(what + ": invalid shape " + shape_str(shape) +
                " (negative dim or more than 2^62 elements)");
  }
  return n;
}

}  // namespace

// The temporary file and its write buffer; removes the file unless committed.
struct SafeTensorsStreamWriter::Out {
  explicit Out(std::string p) : path(std::move(p)) {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("cannot create");
    buf.resize(kWriteBuffer);
  }
  ~Out() {
    if (fd >= 0) ::close(fd);
    if (!committed) ::unlink(path.c_str());
  }

  void write_all(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd, c, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0 && errno == EINTR) continue;
      if (w == 0) errno = EIO;
      if (w <= 0) fail("write failed");
      c += w;
      n -= static_cast<size_t>(w);
    }
  }
  void flush() {
    write_all(buf.data(), used);
    used = 0;
  }
  void put(const void* p, size_t n) {
    if (used + n > buf.size()) flush();
    if (n >= buf.size()) return write_all(p, n);
    std::memcpy(buf.data() + used, p, n);
    used += n;
  }
  void put_half(const float* x, uint64_t n, DType t) {  // BF16 or F16
    while (n > 0) {
      if (buf.size() - used < sizeof(uint16_t)) flush();
      const uint64_t m = std::min<uint64_t>(n, (buf.size() - used) / sizeof(uint16_t));
      for (uint64_t i = 0; i < m; ++i) {
        const uint16_t h = t == DType::BF16 ? float_to_bf16(x[i]) : float_to_f16(x[i]);
        std::memcpy(buf.data() + used + i * sizeof(uint16_t), &h, sizeof h);
      }
      used += m * sizeof(uint16_t), x += m, n -= m;
    }
  }
  void commit(const std::string& final_path) {
    flush();
    if (::fsync(fd) != 0) fail("fsync failed");
    const int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail("close failed");
    if (std::rename(path.c_str(), final_path.c_str()) != 0) fail("cannot rename to " + final_path);
    committed = true;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path + ": " + what + ": " + std::strerror(errno));
  }

  std::string path;
  int fd = -1;
  bool committed = false;
  std::vector<char> buf;
  size_t used = 0;
};

SafeTensorsStreamWriter::SafeTensorsStreamWriter(const std::string& path,
                                                 const std::vector<TensorDecl>& tensors,
                                                 const std::map<std::string, std::string>& metadata)
    : path_(path), decls_(tensors) {
  // The header's members in the order declared, each dumped alone (one ordered object would
  // search its members on every insertion: time n² in the tensor count).
  std::string text = "{";
  auto member = [&](const std::string& key, const nlohmann::ordered_json& value) {
    try {
      text += (text.size() > 1 ? "," : "") + nlohmann::json(key).dump() + ":" + value.dump();
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ": cannot encode header (names and metadata must be valid UTF-8): " +
                  one_line(e.what()));
    }
  };
  if (!metadata.empty()) member("__metadata__", metadata);
  uint64_t offset = 0;
  for (const TensorDecl& d : decls_) {
    const uint64_t n = check_decl(d.name, d.shape, index_);
    index_[d.name] = numel_.size();
    numel_.push_back(n);
    const uint64_t bytes = n * dtype_size(d.dtype);
    member(d.name, {{"dtype", dtype_name(d.dtype)},
                    {"shape", d.shape},
                    {"data_offsets", {offset, offset + bytes}}});
    offset += bytes;
  }
  text += "}";
  text.append((8 - text.size() % 8) % 8, ' ');  // data region starts 8-byte aligned
  char prefix[8];
  for (int i = 0; i < 8; ++i)
    prefix[i] = static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  out_ = std::make_unique<Out>(path + ".tmp");
  out_->put(prefix, sizeof prefix);
  out_->put(text.data(), text.size());
}

SafeTensorsStreamWriter::~SafeTensorsStreamWriter() = default;

void SafeTensorsStreamWriter::append(const std::string& name, const float* data, int64_t count) {
  while (cur_ < decls_.size() && written_ == numel_[cur_]) ++cur_, written_ = 0;
  const auto it = index_.find(name);
  if (it == index_.end()) throw Error(path_ + ": no tensor " + quote(name) + " was declared");
  if (count == 0) return;
  if (!out_) throw Error(path_ + ": append after commit");
  if (it->second != cur_) {
    throw Error(path_ + ": tensor " + quote(name) + " written out of order (" +
                (cur_ < decls_.size() ? "next is " + quote(decls_[cur_].name)
                                      : std::string("every tensor is complete")) +
                ")");
  }
  if (count < 0 || static_cast<uint64_t>(count) > numel_[cur_] - written_) {
    throw Error(path_ + ": tensor " + quote(name) + " " + shape_str(decls_[cur_].shape) +
                " cannot take " + std::to_string(count) + " more elements after " +
                std::to_string(written_));
  }
  if (decls_[cur_].dtype == DType::F32)
    out_->put(data, static_cast<size_t>(count) * sizeof(float));
  else
    out_->put_half(data, static_cast<uint64_t>(count), decls_[cur_].dtype);
  written_ += static_cast<uint64_t>(count);
}

void SafeTensorsStreamWriter::commit() {
  if (!out_) throw Error(path_ + ": already committed");
  while (cur_ < decls_.size() && written_ == numel_[cur_]) ++cur_, written_ = 0;
  if (cur_ < decls_.size()) {
    throw Error(path_ + ": tensor " + quote(decls_[cur_].name) + " is incomplete (" +
                std::to_string(written_) + " of " + std::to_string(numel_[cur_]) +
                " elements written)");
  }
  out_->commit(path_);
  out_.reset();
}

void SafeTensorsWriter::add(const std::string& name, const float* data, const Shape& shape,
                            DType dtype) {
  const uint64_t n = check_decl(name, shape, index_);
  if (n > 0 && data == nullptr)
    throw Error("safetensors writer: tensor " + quote(name) + ": data is null");
  index_[name] = decls_.size();
  decls_.push_back({name, shape, dtype});
  data_.push_back(data);
}

void SafeTensorsWriter::write(const std::string& path) const {
  SafeTensorsStreamWriter out(path, decls_, metadata_);
  for (size_t i = 0; i < decls_.size(); ++i)
    out.append(decls_[i].name, data_[i], numel(decls_[i].shape));
  out.commit();
}

}  // namespace parallama::io
