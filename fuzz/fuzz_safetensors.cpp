// libFuzzer harness: io::SafeTensorsReader on arbitrary bytes. Every file it accepts is read in
// full and in slices, written back with io::SafeTensorsWriter and read again: the names, shapes,
// dtypes, metadata and values must come back. Values are compared bit for bit; the one exception
// is a NaN in a BF16 or F16 tensor, which the writer's narrowing makes quiet (its payload is not
// kept), so there it must come back as a NaN of the same sign. A second write-back of the result
// must then reproduce every bit.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "tensor/error.h"

namespace {

using parallama::DType;
using parallama::Error;
using parallama::Shape;
using parallama::fuzz::fail;

struct Stored {
  DType dtype;
  Shape shape;
  std::vector<float> values;
};

struct Contents {
  std::vector<std::string> order;  // the reader's order: by position in the data region
  std::map<std::string, Stored> tensors;
  std::map<std::string, std::string> metadata;
};

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

// Reads every slice [dim / 3, dim / 3 + half the rest) along each axis of t and checks it against
// the whole tensor.
void check_slices(const parallama::io::SafeTensorsReader& r, const std::string& name,
                  const Stored& t) {
  const int rank = static_cast<int>(t.shape.size());
  for (int axis = 0; axis < rank; ++axis) {
    const int64_t dim = t.shape[axis], begin = dim / 3, count = (dim - begin + 1) / 2;
    int64_t outer = 1, inner = 1;
    bool empty = count == 0;
    for (int d = 0; d < rank; ++d) empty = empty || t.shape[d] == 0;
    if (empty) {  // nothing to read, but the call must still succeed
      r.read_f32_slice(name, nullptr, t.shape, axis, begin, count);
      continue;
    }
    for (int d = 0; d < axis; ++d) outer *= t.shape[d];
    for (int d = axis + 1; d < rank; ++d) inner *= t.shape[d];
    std::vector<float> slice(static_cast<size_t>(outer * count * inner));
    r.read_f32_slice(name, slice.data(), t.shape, axis, begin, count);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t c = 0; c < count; ++c)
        for (int64_t i = 0; i < inner; ++i)
          if (bits(slice[(o * count + c) * inner + i]) !=
              bits(t.values[(o * dim + begin + c) * inner + i]))
            fail("tensor '" + name + "': slice along axis " + std::to_string(axis) +
                 " differs from the whole tensor");
  }
}

Contents read_all(const std::string& path, bool slices) {
  const parallama::io::SafeTensorsReader r(path);
  Contents c;
  c.metadata = r.metadata();
  for (const parallama::io::TensorInfo& info : r.tensors()) {
    Stored t{info.dtype, info.shape, {}};
    t.values.resize(static_cast<size_t>(parallama::numel(info.shape)));
    r.read_f32(info.name, t.values.data(), info.shape);
    if (slices) check_slices(r, info.name, t);
    c.order.push_back(info.name);
    c.tensors.emplace(info.name, std::move(t));
  }
  return c;
}

void write_all(const Contents& c, const std::string& path) {
  parallama::io::SafeTensorsWriter w;
  for (const std::string& name : c.order) {
    const Stored& t = c.tensors.at(name);
    w.add(name, t.values.data(), t.shape, t.dtype);
  }
  w.set_metadata(c.metadata);
  w.write(path);
}

// Writes c to a scratch file and reads it back; a refusal on either side breaks the property.
Contents write_and_read(const Contents& c, const char* what) {
  const std::string path = parallama::fuzz::scratch_path("back.safetensors");
  try {
    write_all(c, path);
    return read_all(path, false);
  } catch (const Error& e) {
    fail(std::string(what) + ": the reader accepted the input but " + e.what());
  }
}

void check_equal(const Contents& a, const Contents& b, bool quiet_nans, const char* what) {
  if (a.metadata != b.metadata) fail(std::string(what) + ": the metadata differs");
  if (a.tensors.size() != b.tensors.size()) fail(std::string(what) + ": tensor count differs");
  for (const auto& [name, ta] : a.tensors) {
    const auto it = b.tensors.find(name);
    if (it == b.tensors.end()) fail(std::string(what) + ": tensor '" + name + "' is missing");
    const Stored& tb = it->second;
    if (ta.dtype != tb.dtype || ta.shape != tb.shape)
      fail(std::string(what) + ": tensor '" + name + "' has another dtype or shape");
    for (size_t i = 0; i < ta.values.size(); ++i) {
      const float x = ta.values[i], y = tb.values[i];
      if (bits(x) == bits(y)) continue;
      if (quiet_nans && ta.dtype != DType::F32 && std::isnan(x) && std::isnan(y) &&
          std::signbit(x) == std::signbit(y))
        continue;
      fail(std::string(what) + ": tensor '" + name + "' element " + std::to_string(i) + " differs");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = parallama::fuzz::scratch_path("in.safetensors");
  parallama::fuzz::write_bytes(path, data, size);
  Contents first;
  try {
    first = read_all(path, true);
  } catch (const Error&) {
    return 0;  // refused with a message: fine
  }
  const Contents second = write_and_read(first, "write-back");
  check_equal(first, second, true, "write-back");
  const Contents third = write_and_read(second, "second write-back");
  check_equal(second, third, false, "second write-back");
  return 0;
}
