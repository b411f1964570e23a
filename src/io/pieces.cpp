// Checkpoints written by every rank; see pieces.h.
#include "io/pieces.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "io/checkpoint.h"
#include "tensor/error.h"

namespace fs = std::filesystem;

namespace parallama::io {

namespace {

constexpr int kIndexFormat = 1;
const char* const kKinds[] = {"model", "optimizer"};

// A box of a tensor: where it starts and its extent in each dimension, and where its elements
// start in the row-major data they are taken from.
struct Box {
  Shape start, shape;
  int64_t first = 0;
};

// The boxes of the elements [a, b) of a row-major tensor of `shape` (one or two dimensions), in
// order: a part of a row, whole rows, a part of a row.
std::vector<Box> boxes_of(const Shape& shape, int64_t a, int64_t b) {
  if (a >= b) return {};
  if (shape.size() == 1) return {{{a}, {b - a}, 0}};
  if (shape.size() != 2)
    throw Error("checkpoint pieces hold tensors of one or two dimensions, not " + shape_str(shape));
  const int64_t C = shape[1];
  if (a / C == (b - 1) / C) return {{{a / C, a % C}, {1, b - a}, 0}};
  std::vector<Box> boxes;
  int64_t at = a;
  if (a % C) boxes.push_back({{a / C, a % C}, {1, C - a % C}, 0}), at += C - a % C;
  if (b / C > at / C) boxes.push_back({{at / C, 0}, {b / C - at / C, C}, at - a}), at = b / C * C;
  if (at < b) boxes.push_back({{at / C, 0}, {1, b - at}, at - a});
  return boxes;
}

std::string key_of(const std::string& name, const Shape& start) {
  std::string k = name + "@";
  for (size_t d = 0; d < start.size(); ++d) k += (d ? "," : "") + std::to_string(start[d]);
  return k;
}

// One piece to write: its name in the file, its box of the whole tensor, and its data.
struct Out {
  std::string tensor, key;
  Shape full, start, shape;
  const float* data;
};

// The pieces of elements [a, b) of spec s (this rank's slice of it), `data` holding them (its
// first float element a), under the tensor's name `name`.
void add_pieces(std::vector<Out>& outs, const std::string& name, const ParamSpec& s, int64_t a,
                int64_t b, const float* data) {
  for (Box& box : boxes_of(s.shape, a, b)) {
    if (s.split_axis >= 0) box.start[s.split_axis] += s.split_offset;
    outs.push_back(
        {name, key_of(name, box.start), s.full_shape, box.start, box.shape, data + box.first});
  }
}

void write_kind(const fs::path& dir, const std::string& kind, int rank,
                const std::vector<Out>& outs, const std::map<std::string, std::string>& meta,
                nlohmann::json& part) {
  if (outs.empty()) return;
  const std::string file = piece_file(kind, rank);
  std::vector<TensorDecl> decls;
  for (const Out& o : outs) decls.push_back({o.key, o.shape, DType::F32});
  SafeTensorsStreamWriter w((dir / file).string(), decls, meta);
  for (const Out& o : outs) w.append(o.key, o.data, numel(o.shape));
  w.commit();  // flushed to disk
  part["checksums"][file] = file_checksum((dir / file).string());
  nlohmann::json& tensors = part[kind];
  for (const Out& o : outs) {
    nlohmann::json& t = tensors[o.tensor];
    if (t.is_null()) t = {{"shape", o.full}, {"pieces", nlohmann::json::array()}};
    t["pieces"].push_back({{"file", file}, {"key", o.key}, {"start", o.start}, {"shape", o.shape}});
  }
}

std::map<std::string, std::string> optimizer_meta(const Optimizer& optim) {
  return {{"optimizer", optim_kind_name(optim.config().name)},
          {"step", std::to_string(optim.steps_taken())}};
}

}  // namespace

std::string piece_file(const std::string& kind, int rank) {
  char n[32];
  std::snprintf(n, sizeof n, ".rank-%05d.safetensors", rank);
  return kind + n;
}

std::string part_file(int rank) {
  char n[32];
  std::snprintf(n, sizeof n, "part.rank-%05d.json", rank);
  return n;
}

void write_rank_pieces(const fs::path& dir, int rank, const ParamBuffer& params,
                       const Optimizer& optim, PieceShare share) {
  const auto& specs = params.layout().specs();
  const ModelShard& shard = params.layout().shard();
  // A tensor every tensor-parallel rank holds whole (a norm) is written by one of them.
  auto ours = [&](size_t i) {
    return !specs[i].tied_copy && (specs[i].split_axis >= 0 || shard.tp_size == 1 ||
                                   static_cast<int>(i % shard.tp_size) == shard.tp_rank);
  };
  auto shared = [&](size_t i) {
    return ours(i) && share.size > 0 && static_cast<int>(i % share.size) == share.rank;
  };
  nlohmann::json part = {{"rank", rank}, {"checksums", nlohmann::json::object()}};
  std::vector<Out> outs;
  for (size_t i = 0; i < specs.size(); ++i)
    if (shared(i))
      add_pieces(outs, specs[i].name, specs[i], 0, specs[i].numel, params.data() + specs[i].offset);
  write_kind(dir, "model", rank, outs, {}, part);
  outs.clear();
  for (int j = 0; j < optim.num_states(); ++j) {
    const std::string prefix = std::string(optim.state_name(j)) + ".";
    for (const OwnedRun& r : optim.owned())
      for (size_t i = 0; i < specs.size(); ++i) {
        const ParamSpec& s = specs[i];
        const int64_t a = std::max(r.begin, s.offset), b = std::min(r.end, s.offset + s.numel);
        if (a >= b || !ours(i) || (optim.owns_all() && !shared(i))) continue;
        add_pieces(outs, prefix + s.name, s, a - s.offset, b - s.offset,
                   optim.state(j) + r.at + (a - r.begin));
      }
  }
  write_kind(dir, "optimizer", rank, outs, optimizer_meta(optim), part);
  write_file_checked((dir / part_file(rank)).string(), part.dump());
}

std::map<std::string, std::string> make_piece_index(const fs::path& dir, int ranks,
                                                    const LlamaConfig& config,
                                                    const Optimizer& optim) {
  std::vector<nlohmann::json> parts;
  std::map<std::string, std::string> checksums;
  for (int r = 0; r < ranks; ++r) {
    const fs::path f = dir / part_file(r);
    std::ifstream in(f, std::ios::binary);
    if (!in)
      throw Error("checkpoint pieces: rank " + std::to_string(r) + "'s part " + f.string() +
                  " is not there (with train.ckpt_per_rank every rank writes into the run "
                  "directory, which must be on a file system every host shares)");
    std::stringstream text;
    text << in.rdbuf();
    try {
      parts.push_back(nlohmann::json::parse(text.str()));
      for (const auto& [file, sum] : parts.back().at("checksums").items())
        checksums[file] = sum.get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(f.string() + ": malformed (" + e.what() + ")");
    }
  }
  write_file_checked((dir / kPieceIndex).string(),
                     merge_piece_index(parts, config, optim).dump(1) + "\n");
  for (int r = 0; r < ranks; ++r) fs::remove(dir / part_file(r));
  return checksums;
}

nlohmann::json merge_piece_index(const std::vector<nlohmann::json>& parts,
                                 const LlamaConfig& config, const Optimizer& optim) {
  nlohmann::json index = {{"format", kIndexFormat}, {"ranks", parts.size()}};
  index["model"] = {{"metadata", nlohmann::json::object()}, {"tensors", nlohmann::json::object()}};
  index["optimizer"] = {{"metadata", optimizer_meta(optim)}, {"tensors", nlohmann::json::object()}};
  for (const nlohmann::json& part : parts)
    for (const char* kind : kKinds) {
      if (!part.contains(kind)) continue;
      for (const auto& [name, t] : part[kind].items()) {
        nlohmann::json& dst = index[kind]["tensors"][name];
        if (dst.is_null()) dst = {{"shape", t["shape"]}, {"pieces", nlohmann::json::array()}};
        if (dst["shape"] != t["shape"])
          throw Error("checkpoint pieces: ranks disagree on the shape of " + name);
        for (const auto& p : t["pieces"]) dst["pieces"].push_back(p);
      }
    }
  const ParamLayout whole(config, ModelShard::whole(config));
  for (const char* kind : kKinds) {
    std::vector<std::string> prefixes = {""};
    if (std::string(kind) == "optimizer") {
      prefixes.clear();
      for (int j = 0; j < optim.num_states(); ++j)
        prefixes.push_back(std::string(optim.state_name(j)) + ".");
    }
    const nlohmann::json& tensors = index[kind]["tensors"];
    size_t want = 0;
    for (const std::string& prefix : prefixes)
      for (const ParamSpec& s : whole.specs()) {
        const std::string name = prefix + s.name;
        ++want;
        if (!tensors.contains(name)) throw Error("checkpoint pieces: no rank wrote " + name);
        int64_t held = 0;
        for (const auto& p : tensors[name]["pieces"]) held += numel(p["shape"].get<Shape>());
        if (tensors[name]["shape"].get<Shape>() != s.full_shape || held != s.numel)
          throw Error("checkpoint pieces: the ranks wrote " + std::to_string(held) + " of the " +
                      std::to_string(s.numel) + " elements of " + name);
      }
    if (tensors.size() != want)
      throw Error("checkpoint pieces: the ranks wrote " + std::to_string(tensors.size()) + " " +
                  kind + " tensors, not " + std::to_string(want));
  }
  return index;
}

// --- reading ---------------------------------------------------------------------------------

PieceSource::PieceSource(const std::string& dir, const std::string& kind)
    : dir_(dir), path_((fs::path(dir) / kPieceIndex).string()) {
  std::ifstream in(path_, std::ios::binary);
  if (!in) throw Error(path_ + ": missing from the checkpoint");
  std::stringstream text;
  text << in.rdbuf();
  auto bad = [&](const std::string& what) { return Error(path_ + ": " + what); };
  try {
    const nlohmann::json j = nlohmann::json::parse(text.str());
    if (!j.is_object() || j.value("format", 0) != kIndexFormat)
      throw bad("not a pieces index of format " + std::to_string(kIndexFormat));
    const nlohmann::json& k = j.at(kind);
    for (const auto& [key, v] : k.at("metadata").items()) meta_[key] = v.get<std::string>();
    for (const auto& [name, t] : k.at("tensors").items()) {
      Entry e{{name, DType::F32, t.at("shape").get<Shape>()}, {}};
      int64_t held = 0;
      for (const auto& p : t.at("pieces")) {
        Piece piece{p.at("file").get<std::string>(), p.at("key").get<std::string>(),
                    p.at("start").get<Shape>(), p.at("shape").get<Shape>()};
        if (piece.file.find('/') != std::string::npos || !piece.file.ends_with(".safetensors"))
          throw bad(name + ": piece file '" + piece.file + "' is not a file of the checkpoint");
        const size_t n = e.info.shape.size();
        if (n < 1 || n > 2 || piece.start.size() != n || piece.shape.size() != n)
          throw bad(name + ": a piece's box does not match the tensor's shape");
        for (size_t d = 0; d < n; ++d)
          if (piece.start[d] < 0 || piece.shape[d] < 0 ||
              piece.start[d] + piece.shape[d] > e.info.shape[d])
            throw bad(name + ": a piece lies outside the tensor");
        held += numel(piece.shape);
        e.pieces.push_back(std::move(piece));
      }
      if (held != numel(e.info.shape))
        throw bad(name + ": its pieces hold " + std::to_string(held) + " of its " +
                  std::to_string(numel(e.info.shape)) + " elements");
      tensors_.emplace(name, std::move(e));
    }
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("malformed (") + e.what() + ")");
  }
}

PieceSource::~PieceSource() = default;

const TensorInfo& PieceSource::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_ + ": no tensor " + name);
  return it->second.info;
}

const PieceSource::Entry& PieceSource::entry(const std::string& name, const Shape& expected) const {
  const Entry& e = tensors_.at(info(name).name);
  if (e.info.shape != expected)
    throw Error(path_ + ": tensor " + name + " has shape " + shape_str(e.info.shape) +
                ", expected " + shape_str(expected));
  return e;
}

const SafeTensorsReader& PieceSource::file(const std::string& name) const {
  auto& f = files_[name];
  if (!f) f = std::make_unique<SafeTensorsReader>((fs::path(dir_) / name).string());
  return *f;
}

void PieceSource::read_f32(const std::string& name, float* dst, const Shape& expected) const {
  read_f32_slice(name, dst, expected, 0, 0, expected.empty() ? 1 : expected[0]);
}

void PieceSource::read_f32_slice(const std::string& name, float* dst, const Shape& expected,
                                 int axis, int64_t begin, int64_t count) const {
  const Entry& e = entry(name, expected);
  const bool vec = expected.size() == 1;
  if (axis < 0 || axis >= static_cast<int>(expected.size()) || begin < 0 || count < 0 ||
      begin + count > expected[axis])
    throw Error(path_ + ": slice [" + std::to_string(begin) + ", " + std::to_string(begin + count) +
                ") on axis " + std::to_string(axis) + " is outside " + name + " of shape " +
                shape_str(expected));
  // Everything as rows × columns (a vector is one row); the box wanted: rows [r0, r1), columns
  // [c0, c1).
  const int64_t cols = vec ? expected[0] : expected[1];
  const int64_t r0 = vec || axis == 1 ? 0 : begin, r1 = vec         ? 1
                                                        : axis == 1 ? expected[0]
                                                                    : begin + count;
  const int64_t c0 = vec || axis == 1 ? begin : 0, c1 = vec || axis == 1 ? begin + count : cols;
  const int64_t width = c1 - c0;
  int64_t covered = 0;
  std::vector<float> buf;
  for (const Piece& p : e.pieces) {
    const int64_t pr = vec ? 0 : p.start[0], prn = vec ? 1 : p.shape[0];
    const int64_t pc = vec ? p.start[0] : p.start[1], pcn = vec ? p.shape[0] : p.shape[1];
    const int64_t a0 = std::max(r0, pr), a1 = std::min(r1, pr + prn);
    const int64_t b0 = std::max(c0, pc), b1 = std::min(c1, pc + pcn);
    if (a0 >= a1 || b0 >= b1) continue;
    const SafeTensorsReader& f = file(p.file);
    if (vec) {  // just the columns wanted
      buf.resize(static_cast<size_t>(b1 - b0));
      f.read_f32_slice(p.key, buf.data(), p.shape, 0, b0 - pc, b1 - b0);
      std::memcpy(dst + (b0 - c0), buf.data(), sizeof(float) * static_cast<size_t>(b1 - b0));
    } else {  // the rows wanted, of which the columns wanted
      buf.resize(static_cast<size_t>((a1 - a0) * pcn));
      f.read_f32_slice(p.key, buf.data(), p.shape, 0, a0 - pr, a1 - a0);
      for (int64_t r = a0; r < a1; ++r)
        std::memcpy(dst + (r - r0) * width + (b0 - c0), buf.data() + (r - a0) * pcn + (b0 - pc),
                    sizeof(float) * static_cast<size_t>(b1 - b0));
    }
    covered += (a1 - a0) * (b1 - b0);
  }
  if (covered != (r1 - r0) * width)
    throw Error(path_ + ": the pieces of " + name + " cover " + std::to_string(covered) +
                " of the " + std::to_string((r1 - r0) * width) + " elements read");
}

std::unique_ptr<TensorSource> open_checkpoint_tensors(const std::string& dir,
                                                      const std::string& kind) {
  const fs::path whole = fs::path(dir) / (kind + ".safetensors");
  if (!fs::exists(whole) && fs::exists(fs::path(dir) / kPieceIndex))
    return std::make_unique<PieceSource>(dir, kind);
  return std::make_unique<SafeTensorsReader>(whole.string());
}

std::vector<std::string> checkpoint_tensor_files(const nlohmann::json& trainer, bool optimizer) {
  std::vector<std::string> files;
  bool model = false, optim = false;
  if (trainer.contains("checksums"))
    for (const auto& item : trainer["checksums"].items()) {
      const std::string& f = item.key();
      const bool m = f == "model.safetensors" || f.starts_with("model.rank-") || f == kPieceIndex;
      const bool o = f == "optimizer.safetensors" || f.starts_with("optimizer.rank-");
      if (m || (optimizer && o)) files.push_back(f);
      model |= m, optim |= o;
    }
  // None listed: the whole file, so that verifying it names what is missing.
  if (!model) files.push_back("model.safetensors");
  if (optimizer && !optim) files.push_back("optimizer.safetensors");
  return files;
}

}  // namespace parallama::io
