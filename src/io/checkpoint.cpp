#include "io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <utility>

#include "io/json_depth.h"
#include "io/param_io.h"
#include "io/paths.h"
#include "tensor/error.h"
#include "tensor/hash.h"

namespace fs = std::filesystem;

namespace parallama {

namespace {

constexpr int kFormat = 2;         // 2: trainer.json carries its own checksum
constexpr int kMaxJsonDepth = 16;  // trainer.json nests 3 deep (config.model.rope_...)
constexpr const char* kTensorFiles[] = {"model.safetensors", "optimizer.safetensors"};

// The checksum of trainer.json: FNV-1a of its compact text without the "checksum" key (nlohmann
// writes an object's keys sorted and numbers in their shortest round-trip form, so the text of
// the parsed file is the text that was hashed).
std::string json_checksum(nlohmann::json j) {
  j.erase("checksum");
  return hex16(fnv1a64(j.dump()));
}

// Format 1 (no checksum of its own) is read only for files its writers could have made: every
// such writer wrote the fields of kFormat1Required, nothing outside kFormat1Fields, and in
// "config" only the settings of kFormat1Settings. A format-2 writer always adds "checksum" and
// settings that came later (model.rope_scaling, ...), so a newer file relabelled as format 1 to
// slip past its checksum is refused, not read unchecked.
constexpr const char* kFormat1Fields[] = {
    "format", "step",  "data_position", "checksums",      "config",     "layout",
    "rng",    "epoch", "loss",          "tokenizer_hash", "loss_scale", "tied_embedding_copies"};
constexpr const char* kFormat1Required[] = {"config", "layout", "rng",
                                            "epoch",  "loss",   "tokenizer_hash"};
// Each config section of format 1 with its settings (space-separated).
constexpr std::pair<const char*, const char*> kFormat1Settings[] = {
    {"model",
     "preset dim n_layers n_heads n_kv_heads ffn_dim vocab_size max_seq_len norm_eps rope_theta "
     "tie_embeddings"},
    {"train",
     "batch_size seq_len micro_batches steps seed threads grad_clip log_every val_every "
     "val_batches ckpt_every out_dir recompute precision loss_scale loss_scale_window"},
    {"optim",
     "name lr min_lr warmup_steps beta1 beta2 eps weight_decay momentum dampening nesterov"},
    {"data", "dir"},
    {"parallel",
     "dp tp pp pp_layers pp_schedule pp_virtual pp_trace bucket_mb reduce_dtype zero "
     "check_collectives timeout_s sync"},
    {"ps", "servers max-staleness slow-rank slow-ms"},
    {"local", "period"},
    {"diloco", "inner-steps outer-lr outer-momentum"},
    {"bench", "steps warmup"}};

// Empty when j could be a format-1 file; else why not.
std::string not_format1(const nlohmann::json& j) {
  auto listed = [](const auto& list, const std::string& key) {
    return std::find(std::begin(list), std::end(list), key) != std::end(list);
  };
  for (const auto& [key, v] : j.items())
    if (!listed(kFormat1Fields, key)) return "it holds \"" + key + "\", which format 1 never had";
  for (const char* key : kFormat1Required)
    if (!j.contains(key)) return "it lacks \"" + std::string(key) + "\", which format 1 always had";
  if (j["config"].is_object())
    for (const auto& item : j["config"].items()) {
      const std::string& sec = item.key();
      const nlohmann::json& table = item.value();
      if (!table.is_object()) return "its config." + sec + " is not a table";
      const auto* known = std::find_if(std::begin(kFormat1Settings), std::end(kFormat1Settings),
                                       [&](const auto& e) { return sec == e.first; });
      for (const auto& [key, v] : table.items())
        if (known == std::end(kFormat1Settings) ||
            (" " + std::string(known->second) + " ").find(" " + key + " ") == std::string::npos)
          return "it holds the setting " + sec + "." + key + ", which format 1 never had";
    }
  return "";
}

bool is_hex16(const nlohmann::json& v) {
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  return s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

void write_file_checked(const std::string& file, const std::string& bytes,
                        const std::string& name) {
  auto failed = [&](int err) {
    throw Error("cannot write " + (name.empty() ? file : name) + ": " +
                (err ? std::strerror(err) : "the write failed"));
  };
  errno = 0;
  std::ofstream f(file, std::ios::binary | std::ios::trunc);
  if (!f.is_open()) failed(errno);
  if (!f.write(bytes.data(), static_cast<std::streamsize>(bytes.size())) || !f.flush())
    failed(errno);
  f.close();
  if (!f) failed(errno);
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const fs::path target(path);
  const fs::path tmp = target.parent_path() /
                       ("." + target.filename().string() + ".tmp-" + std::to_string(getpid()));
  try {
    write_file_checked(tmp.string(), text, path);
    fs::rename(tmp, target);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    if (dynamic_cast<const Error*>(&e)) throw;
    throw Error("cannot write " + path + ": " + e.what());
  }
}

uint64_t tokenizer_hash(const std::string& main) {
  uint64_t h = kFnv1a64Basis;
  for (const std::string& f : tokenizer_files(main)) h = file_hash(f, h);
  return h;
}

void check_tokenizer_hash(const std::string& tokenizer_path, uint64_t want,
                          const std::string& recorded_in) {
  const std::string got = hex16(tokenizer_hash(tokenizer_path)), expected = hex16(want);
  if (got != expected)
    throw Error(tokenizer_path + " (hash " + got + ") is not the tokenizer that " + recorded_in +
                " was made with (hash " + expected +
                "); the tokenizer was replaced: run `parallama prepare` again, or put back the "
                "original");
}

std::string checkpoint_tokenizer(const std::string& ckpt) {
  const nlohmann::json tj = read_trainer_json(ckpt);
  const std::string path = tokenizer_in(ckpt, "checkpoint");
  check_tokenizer_hash(path, tj["tokenizer_hash"].get<uint64_t>(), ckpt);
  return path;
}

void write_dir_atomically(const std::string& dir,
                          const std::function<void(const fs::path& tmp)>& fill) {
  const fs::path out(dir);
  const fs::path parent = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  const fs::path tmp =
      parent / ("." + out.filename().string() + ".tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  try {
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp);
    fill(tmp);
    fs::remove_all(out, ec);
    fs::rename(tmp, out);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw Error("cannot write " + dir + ": " + e.code().message());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

uint64_t file_hash(const std::string& path, uint64_t h) {
  std::ifstream f = open_input(path, "file", int64_t{1} << 50);  // read in pieces: no bound
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h = fnv1a64(buf.data(), static_cast<size_t>(f.gcount()), h);
  }
  if (f.bad()) throw Error("cannot read " + path);
  return h;
}

std::string file_checksum(const std::string& path) {
  return hex16(file_hash(path));
}

namespace {

void sync_dir(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// What the writer does once the tensor files are in tmp: the copied files, trainer.json (with the
// checksums of `files`; written last, it marks the directory complete), everything flushed to
// disk, and tmp renamed to final_dir (replacing an older checkpoint of that name).
struct Finish {
  fs::path tmp, final_dir;
  std::vector<std::string> files, copy_files;
  nlohmann::json trainer;                        // without the checksums
  std::map<std::string, std::string> checksums;  // known already (the ranks' pieces)

  void operator()() const {
    const fs::path parent = final_dir.parent_path();
    for (const auto& f : copy_files) fs::copy_file(f, tmp / fs::path(f).filename());
    nlohmann::json j = trainer;
    for (const auto& [name, sum] : checksums) j["checksums"][name] = sum;
    for (const std::string& name : files)
      j["checksums"][name] = file_checksum((tmp / name).string());
    seal_json(j);
    const std::string text = j.dump(1) + "\n";
    parse_trainer_json(text, final_dir.string() + "/trainer.json");  // what every load will check
    write_file_checked((tmp / "trainer.json").string(), text);       // last: marks completeness
    ::sync();
    if (fs::exists(final_dir)) {  // replace an older checkpoint of the same name
      const fs::path old =
          parent / ("." + final_dir.filename().string() + ".old-" + std::to_string(getpid()));
      fs::remove_all(old);
      fs::rename(final_dir, old);
      fs::rename(tmp, final_dir);
      fs::remove_all(old);
    } else {
      fs::rename(tmp, final_dir);
    }
    sync_dir(parent);  // the rename itself on disk
  }
};

}  // namespace

void save_checkpoint(const std::string& dir, const ParamBuffer& params, const Optimizer& optim,
                     const CheckpointState& state, comm::Group& tp, comm::Group& pp, bool writer,
                     comm::Group dp, std::function<void()>* deferred,
                     const std::string& stage_root) {
  // Throws unless exactly one writes; the temporary directory is named after its process.
  const io::WriterAt w = io::replica_writer(tp, pp, writer, "saving " + dir, dp);
  const fs::path final_dir(dir);
  const fs::path parent = final_dir.has_parent_path() ? final_dir.parent_path() : fs::path(".");
  const std::string tmp_name =
      "." + final_dir.filename().string() + ".tmp-" + std::to_string(w.pid);
  if (state.per_rank && deferred)
    throw Error("saving " + dir + ": a checkpoint written by every rank is not deferred");
  // Deferred, the files go to a staging directory in memory first (see the header).
  const bool staged = deferred != nullptr;
  const fs::path tmp = staged ? fs::path(stage_root) / ("parallama" + tmp_name) : parent / tmp_name;
  std::exception_ptr error;
  if (writer)
    io::guarded(error, [&] {
      fs::create_directories(parent);
      fs::remove_all(tmp);
      fs::create_directories(tmp);
    });
  io::agree_on_failure(tp, pp, dp, error);
  std::vector<std::string> files(std::begin(kTensorFiles), std::end(kTensorFiles));
  const int ranks = tp.size() * pp.size() * dp.size();
  std::map<std::string, std::string> pieces;  // per rank: every piece file's checksum
  try {
    if (state.per_rank) {  // each rank its own pieces, at once; then the writer indexes them
      files = {io::kPieceIndex};
      const int rank = (dp.rank() * pp.size() + pp.rank()) * tp.size() + tp.rank();
      io::guarded(error, [&] { io::write_rank_pieces(tmp, rank, params, optim, state.share); });
      io::agree_on_failure(tp, pp, dp, error);
      if (writer)
        io::guarded(error, [&] {
          pieces = io::make_piece_index(tmp, ranks, params.layout().config(), optim);
        });
      io::agree_on_failure(tp, pp, dp, error);
    } else {
      io::save_params(params, (tmp / "model.safetensors").string(), tp, pp, writer, dp);
      io::save_optimizer(optim, (tmp / "optimizer.safetensors").string(), tp, pp, writer, dp);
    }
    if (state.more_files)
      for (std::string& f : state.more_files(tmp)) files.push_back(std::move(f));
  } catch (...) {
    std::error_code ignored;
    if (writer) fs::remove_all(tmp, ignored);
    throw;
  }
  nlohmann::json j = state.extra.is_object() ? state.extra : nlohmann::json::object();
  j["format"] = kFormat;
  j["step"] = state.step;
  j["data_position"] = state.data_position;
  Finish finish{staged ? parent / tmp_name : tmp, final_dir, files, state.copy_files, j, pieces};
  if (staged) {  // every rank: the rest is the writer's alone, on its thread
    if (!writer) return;
    *deferred = [finish, stage = tmp] {
      try {
        fs::remove_all(finish.tmp);
        fs::copy(stage, finish.tmp);  // finish() flushes it to disk
        fs::remove_all(stage);
        finish();
      } catch (...) {
        std::error_code ignored;
        fs::remove_all(stage, ignored);
        fs::remove_all(finish.tmp, ignored);
        throw;
      }
    };
    return;
  }
  if (writer) io::guarded(error, finish);
  if (writer && error) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
  }
  io::agree_on_failure(tp, pp, dp, error);
}

void seal_json(nlohmann::json& j) {
  j["checksum"] = json_checksum(j);
}

void check_json_seal(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object() || !is_hex16(j.value("checksum", nlohmann::json())))
    throw Error(source + ": corrupt (no \"checksum\" of 16 hex digits)");
  const std::string want = j["checksum"].get<std::string>(), got = json_checksum(j);
  if (got != want)
    throw Error(source + ": checksum " + got + " does not match the one recorded (" + want +
                "); the file was edited or is corrupt");
}

nlohmann::json parse_trainer_json(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = parse_json_bounded(text.begin(), text.end(), kMaxJsonDepth);
  } catch (const nlohmann::json::exception& e) {
    std::string why = e.what();
    if (const size_t at = why.find("] "); at != std::string::npos) why = why.substr(at + 2);
    throw Error(source + ": corrupt (" + why + ")");
  } catch (const Error& e) {
    throw Error(source + ": corrupt (" + e.what() + ")");
  }
  auto bad = [&](const std::string& what) { return Error(source + ": corrupt (" + what + ")"); };
  if (!j.is_object()) throw bad("not a JSON object");
  if (!j.contains("format") || !j["format"].is_number_integer()) throw bad("no integer \"format\"");
  const int64_t format = j["format"].get<int64_t>();
  if (format < 1 || format > kFormat)
    throw Error(source + ": checkpoint format " + j["format"].dump() +
                " is not supported (this parallama reads formats 1 to " + std::to_string(kFormat) +
                ")");
  if (format == 1) {  // no checksum of its own: only a file that a format-1 writer could make
    if (const std::string why = not_format1(j); !why.empty())
      throw Error(source + ": not a format-1 file, as it says: " + why +
                  "; it was edited or is corrupt");
  } else {
    check_json_seal(j, source);
  }
  // Every field a command reads, with its type and range.
  auto integer = [&](const char* key, int64_t lo, int64_t hi, bool required) {
    if (!j.contains(key)) {
      if (required) throw bad(std::string("no \"") + key + "\"");
      return;
    }
    const nlohmann::json& v = j[key];
    const bool ok = v.is_number_integer() &&
                    (v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi)
                                            : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi);
    if (!ok)
      throw bad(std::string("\"") + key + "\" is " + v.dump() + ", not an integer in [" +
                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  constexpr int64_t kMaxSteps = 1'000'000'000'000, kMaxPosition = int64_t{1} << 53;
  integer("step", 0, kMaxSteps, true);
  integer("data_position", 0, kMaxPosition, true);
  integer("epoch", 0, kMaxPosition, false);
  if (!j.contains("tokenizer_hash")) throw bad("no \"tokenizer_hash\"");
  if (!j["tokenizer_hash"].is_number_unsigned() &&
      !(j["tokenizer_hash"].is_number_integer() && j["tokenizer_hash"].get<int64_t>() >= 0))
    throw bad("\"tokenizer_hash\" is not an unsigned integer");
  if (!j.contains("checksums") || !j["checksums"].is_object())
    throw bad("no \"checksums\" of the tensor files");
  // The two whole files, or (written by every rank) the index of the pieces.
  const bool pieces = j["checksums"].contains(io::kPieceIndex);
  for (const char* name :
       pieces ? std::vector<const char*>{io::kPieceIndex}
              : std::vector<const char*>(std::begin(kTensorFiles), std::end(kTensorFiles)))
    if (!is_hex16(j["checksums"].value(name, nlohmann::json())))
      throw bad(std::string("the checksum of ") + name + " is not 16 hex digits");
  for (const auto& [name, sum] : j["checksums"].items())
    if (!is_hex16(sum) || name.empty() || name.find('/') != std::string::npos || name[0] == '.')
      throw bad("the checksum of \"" + name + "\" is not 16 hex digits of a file in the directory");
  for (const char* key : {"config", "layout", "rng", "loss_scale"})
    if (j.contains(key) && !j[key].is_object())
      throw bad(std::string("\"") + key + "\" is not an object");
  if (j.contains("loss") && !j["loss"].is_number()) throw bad("\"loss\" is not a number");
  return j;
}

nlohmann::json read_trainer_json(const std::string& dir) {
  const fs::path p = fs::path(dir) / "trainer.json";
  if (!fs::is_directory(dir)) throw Error("checkpoint '" + dir + "' is not a directory");
  if (!fs::exists(p))
    throw Error(p.string() + ": missing; '" + dir + "' is not a complete checkpoint");
  std::ifstream f = open_input(p.string(), "checkpoint file", kMaxConfigBytes);
  const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  if (f.bad()) throw Error("cannot read " + p.string());
  nlohmann::json j = parse_trainer_json(text, p.string());
  static std::set<std::string> warned;  // once per file and process
  if (j["format"] == 1 && warned.insert(p.string()).second)
    std::fprintf(stderr,
                 "warning: %s is checkpoint format 1 (older, without a checksum of its own): an "
                 "edit to it cannot be detected\n",
                 p.string().c_str());
  return j;
}

namespace {

void verify(const std::string& dir, const nlohmann::json& j, const std::string& name) {
  const std::string path = (fs::path(dir) / name).string();
  if (!fs::exists(path)) throw Error(path + ": missing from the checkpoint");
  const auto want = j["checksums"].value(name, std::string());
  const std::string got = file_checksum(path);
  if (got != want)
    throw Error(path + ": checksum " + got + " does not match trainer.json (" + want +
                "); the file is corrupt or truncated");
}

}  // namespace

void verify_checkpoint_file(const std::string& dir, const nlohmann::json& trainer_json,
                            const std::string& name) {
  verify(dir, trainer_json, name);
}

void verify_checkpoint_files(const std::string& dir, const nlohmann::json& trainer_json) {
  for (const auto& item : trainer_json["checksums"].items()) verify(dir, trainer_json, item.key());
}

namespace {

// Reads trainer.json, verifies the model's tensor files, and with `optimizer` the optimizer's
// (io::checkpoint_tensor_files; file i on the replica's rank i % (tp.size() · pp.size()),
// counting tensor-parallel ranks fastest), then runs read on every
// rank; throws on every rank of the replica if any of that failed anywhere.
template <class F>
nlohmann::json load(const std::string& dir, bool optimizer, comm::Group& tp, comm::Group& pp,
                    F&& read) {
  std::exception_ptr error;
  nlohmann::json j;
  io::guarded(error, [&] { j = read_trainer_json(dir); });
  const int me = pp.rank() * tp.size() + tp.rank(), ranks = pp.size() * tp.size();
  const std::vector<std::string> files = io::checkpoint_tensor_files(j, optimizer);
  for (size_t i = 0; i < files.size(); ++i)
    if (static_cast<int>(i % ranks) == me) io::guarded(error, [&] { verify(dir, j, files[i]); });
  io::agree_on_failure(tp, pp, error);  // no rank reads tensors of a file that failed its checksum
  io::guarded(error, [&] { read(fs::path(dir)); });
  io::agree_on_failure(tp, pp, error);
  return j;
}

}  // namespace

void load_checkpoint_model(const std::string& dir, ParamBuffer& params, comm::Group& tp,
                           comm::Group& pp) {
  load(dir, false, tp, pp, [&](const fs::path& d) {
    io::read_params(*io::open_checkpoint_tensors(d.string(), "model"), params);
  });
}

CheckpointState load_checkpoint(const std::string& dir, ParamBuffer& params, Optimizer& optim,
                                comm::Group& tp, comm::Group& pp) {
  const nlohmann::json j = load(dir, true, tp, pp, [&](const fs::path& d) {
    io::read_params(*io::open_checkpoint_tensors(d.string(), "model"), params);
    io::load_optimizer(optim, *io::open_checkpoint_tensors(d.string(), "optimizer"));
  });
  CheckpointState s;
  s.step = j["step"].get<int64_t>();
  s.data_position = j["data_position"].get<int64_t>();
  s.extra = j;
  return s;
}

}  // namespace parallama
