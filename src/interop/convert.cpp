// `parallama convert`: a Hugging Face Llama directory (hf:DIR) to a checkpoint directory, and a
// checkpoint back to hf:DIR. Both directions stream: each tensor goes from file to file in pieces
// of a few MiB, so memory stays far below one tensor of the model, whatever its size. Everything
// that can be wrong with the input (config, tokenizer, every tensor's presence and shape) is
// checked before anything is written, and the output directory appears only once complete.
// A checkpoint also goes to gguf:FILE, one llama.cpp model file (io/gguf.h), streamed the same way.
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "data/bpe.h"
#include "data/tokenizer.h"
#include "interop/convert.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/hf.h"
#include "io/json_depth.h"
#include "io/paths.h"
#include "tensor/error.h"
#include "train/run_config.h"
#include "train/run_dir.h"

namespace fs = std::filesystem;

namespace parallama {

namespace {

using nlohmann::json;

constexpr int64_t kPieceFloats = int64_t{1} << 20;  // 4 MiB of fp32 per read
constexpr int kCheckpointFormat = 2;                // trainer.json with a checksum of its own

bool has_prefix(const std::string& s, const char* p) {
  return s.rfind(p, 0) == 0;
}

fs::path clean(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  return p.filename().empty() ? p.parent_path() : p;
}

json read_json(const fs::path& path) {
  if (!fs::exists(path)) throw Error(path.string() + ": missing");
  std::ifstream f = open_input(path.string(), "file", kMaxConfigBytes);
  try {
    return parse_json_bounded(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>(),
                              16);  // a config.json nests 2 or 3 levels
  } catch (const json::exception&) {
    throw Error(path.string() + ": not valid JSON");
  } catch (const Error& e) {
    throw Error(path.string() + ": " + e.what());
  }
}

// The output directory: refused when it exists and is not empty. Files go into a temporary
// sibling, renamed into place by commit(); without commit() (an error) it is removed.
class NewDir {
 public:
  explicit NewDir(const std::string& dir) : final_(clean(dir)) {
    std::error_code ec;
    if (fs::exists(final_, ec) && !(fs::is_directory(final_, ec) && fs::is_empty(final_, ec)))
      throw Error(final_.string() +
                  " already exists and is not empty; remove it or choose another");
    const fs::path parent = final_.has_parent_path() ? final_.parent_path() : fs::path(".");
    tmp_ = parent / ("." + final_.filename().string() + ".tmp-" + std::to_string(getpid()));
    fs::create_directories(parent);
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  ~NewDir() {
    std::error_code ignored;
    if (!done_) fs::remove_all(tmp_, ignored);
  }
  NewDir(const NewDir&) = delete;
  NewDir& operator=(const NewDir&) = delete;
  std::string operator/(const std::string& name) const { return (tmp_ / name).string(); }
  void commit() {
    ::sync();
    if (fs::exists(final_)) fs::remove(final_);  // empty (checked above)
    fs::rename(tmp_, final_);
    done_ = true;
  }
  std::string path() const { return final_.string(); }

 private:
  fs::path final_, tmp_;
  bool done_ = false;
};

// A float as the shortest TOML float that reads back as it.
std::string toml_float(float f) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, f);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

// The [model] section of a run config as TOML: `--config` of a run that fine-tunes the model.
std::string model_toml(const RunConfig& rc, const std::string& ckpt) {
  const json model = config_to_json(rc)["model"];
  std::ostringstream o;
  o << "# The shape of the model in " << ckpt << ". Fine-tune it with\n"
    << "#   parallama train --config " << ckpt << "/model.toml --init " << ckpt
    << " --data.dir DATA --train.out_dir RUN\n"
    << "[model]\npreset = " << model["preset"].dump() << "\n";
  for (const auto& [key, v] : model.items()) {
    if (key == "preset") continue;
    o << key << " = ";
    if (v.is_number_float())
      o << toml_float(v.get<float>());  // every float of [model] is a float
    else
      o << v.dump();  // integers, true/false, and strings (JSON's escapes are TOML's)
    o << "\n";
  }
  return o.str();
}

// --- hf:DIR -> checkpoint ------------------------------------------------------------------

void hf_to_checkpoint(const std::string& hf, const std::string& out) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path dir(hf);
  if (!fs::is_directory(dir)) throw Error("hf:" + hf + " is not a directory");
  const io::HfConfig hc =
      io::parse_hf_config(read_json(dir / "config.json"), (dir / "config.json").string());
  // Llama 1 and 2 ship tokenizer.model (and often a tokenizer.json of the same): the
  // sentencepiece model is taken when there is one; Llama 3 ships only tokenizer.json.
  const std::string tok_path = tokenizer_in(dir.string(), "hf:");
  const Tokenizer tok(tok_path);
  if (tok.vocab_size() > hc.model.vocab_size)
    throw Error(tok_path + " has " + std::to_string(tok.vocab_size()) +
                " tokens, more than the model's vocab_size " + std::to_string(hc.model.vocab_size));
  RunConfig rc;
  rc.model = hc.model;
  rc.train.seq_len = std::min(rc.train.seq_len, rc.model.max_seq_len);
  rc.validate();

  // Every tensor of the model, with its shape, and no tensor the model does not have.
  const io::HfWeights weights(hf);
  const ParamLayout layout(rc.model, ModelShard::whole(rc.model));
  std::set<std::string> wanted;
  for (const ParamSpec& s : layout.specs()) {
    wanted.insert(s.name);
    const io::SafeTensorsReader& r = weights.file_of(s.name);
    if (r.info(s.name).shape != s.full_shape)
      throw Error(r.path() + ": tensor " + s.name + " has shape " +
                  shape_str(r.info(s.name).shape) + " but config.json gives " +
                  shape_str(s.full_shape));
  }
  for (const std::string& name : weights.names()) {
    if (wanted.count(name)) continue;
    const bool inv_freq = name.size() > 20 && name.ends_with("rotary_emb.inv_freq");
    if (inv_freq || (name == "lm_head.weight" && rc.model.tie_embeddings)) continue;
    throw Error(weights.file_of(name).path() + ": tensor " + name +
                " is not part of a Llama model of this config");
  }
  const DType stored =
      weights.file_of("model.embed_tokens.weight").info("model.embed_tokens.weight").dtype;

  NewDir d(out);
  std::vector<float> buf;
  {  // the weights, fp32, in the model's order (as a trained checkpoint holds them)
    std::vector<io::TensorDecl> decls;
    for (const ParamSpec& s : layout.specs()) decls.push_back({s.name, s.full_shape, DType::F32});
    io::SafeTensorsStreamWriter w(d / "model.safetensors", decls);
    for (const ParamSpec& s : layout.specs())
      io::copy_tensor(weights.file_of(s.name), s.name, s.full_shape, w, s.name, buf, kPieceFloats);
    w.commit();
  }
  {  // a fresh optimizer: zero AdamW moments at step 0 (state names as Optimizer::state_name)
    if (rc.optim.name != OptimKind::adamw)
      throw Error("convert writes AdamW state, not " + std::string(optim_kind_name(rc.optim.name)));
    std::vector<io::TensorDecl> decls;
    for (const char* state : {"exp_avg.", "exp_avg_sq."})
      for (const ParamSpec& s : layout.specs())
        decls.push_back({state + s.name, s.full_shape, DType::F32});
    io::SafeTensorsStreamWriter w(d / "optimizer.safetensors", decls,
                                  {{"optimizer", optim_kind_name(rc.optim.name)}, {"step", "0"}});
    buf.assign(static_cast<size_t>(kPieceFloats), 0.0f);
    for (const io::TensorDecl& t : decls)
      for (int64_t left = numel(t.shape); left > 0; left -= kPieceFloats)
        w.append(t.name, buf.data(), std::min(left, kPieceFloats));
    w.commit();
    std::vector<float>().swap(buf);
  }
  copy_tokenizer(tok_path, d / "");
  write_file_checked(d / "model.toml", model_toml(rc, d.path()));
  json j;
  j["config"] = config_to_json(rc);
  j["layout"] = {{"dp", 1}, {"tp", 1}, {"pp", 1}, {"sync", sync_name(rc.parallel.strategy.sync)}};
  j["tokenizer_hash"] = tok.hash();
  j["converted_from"] = {{"format", "hf"}, {"torch_dtype", io::torch_dtype_name(stored)}};
  j["format"] = kCheckpointFormat;
  j["step"] = 0;
  j["data_position"] = 0;
  for (const char* name : {"model.safetensors", "optimizer.safetensors"})
    j["checksums"][name] = file_checksum(d / name);
  seal_json(j);
  const std::string text = j.dump(1) + "\n";
  parse_trainer_json(text, d / "trainer.json");  // what every command will check on load
  write_file_checked(d / "trainer.json", text);  // written last, as save_checkpoint does
  d.commit();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("converted hf:%s (%.2fM parameters, %s) to %s in %.1f s\n", hf.c_str(),
              rc.model.num_params() / 1e6, io::torch_dtype_name(stored), d.path().c_str(), s);
  std::printf("fine-tune: parallama train --config %s/model.toml --init %s --data.dir DATA\n",
              d.path().c_str(), d.path().c_str());
}

// --- checkpoint -> hf:DIR ------------------------------------------------------------------

// A checkpoint (or a run directory: its latest) with its model file's checksum and its
// tokenizer's hash checked: its trainer.json, config, and the paths of both files.
struct CheckedCheckpoint {
  std::string dir;
  json tj;
  RunConfig rc;
  std::string tok_path;
  std::unique_ptr<io::TensorSource> weights;  // its one file, or its ranks' pieces
};

CheckedCheckpoint open_checkpoint(std::string ckpt) {
  if (!fs::exists(fs::path(ckpt) / "trainer.json"))  // a run directory: its latest checkpoint
    if (const std::string latest = latest_checkpoint(ckpt); !latest.empty()) ckpt = latest;
  const json tj = read_trainer_json(ckpt);
  const RunConfig rc = checkpoint_config(tj, ckpt + "/trainer.json");
  for (const std::string& f : io::checkpoint_tensor_files(tj, false))
    verify_checkpoint_file(ckpt, tj, f);
  const std::string tok_path = tokenizer_in(ckpt, "checkpoint");
  check_tokenizer_hash(tok_path, tj["tokenizer_hash"].get<uint64_t>(), ckpt);
  return {ckpt, tj, rc, tok_path, io::open_checkpoint_tensors(ckpt, "model")};
}

void checkpoint_to_hf(const std::string& from, const std::string& out, const std::string& dtype,
                      double shard_mb, bool allow_overflow) {
  const auto start = std::chrono::steady_clock::now();
  const CheckedCheckpoint c = open_checkpoint(from);
  const std::string &ckpt = c.dir, &tok_path = c.tok_path;
  const json& tj = c.tj;
  const LlamaConfig& m = c.rc.model;
  // The type asked for; else the one the model was converted from; else fp32, as trained.
  std::string type = dtype;
  if (type.empty() && tj.contains("converted_from") && tj["converted_from"].is_object())
    type = tj["converted_from"].value("torch_dtype", "");
  const DType dt = io::parse_hf_dtype(type.empty() ? "f32" : type);

  const io::TensorSource& r = *c.weights;
  const ParamLayout layout(m, ModelShard::whole(m));
  std::vector<io::TensorDecl> decls;
  for (const ParamSpec& s : layout.specs()) {
    if (r.info(s.name).shape != s.full_shape)
      throw Error(r.path() + ": tensor " + s.name + " has shape " +
                  shape_str(r.info(s.name).shape) + " but the checkpoint's config gives " +
                  shape_str(s.full_shape));
    decls.push_back({s.name, s.full_shape, dt});
  }
  const auto shards = io::plan_hf_shards(decls, static_cast<uint64_t>(shard_mb * 1e6));
  const bool half = dt == DType::F16;
  if (half) {
    std::vector<std::pair<std::string, Shape>> tensors;
    for (const io::TensorDecl& t : decls) tensors.emplace_back(t.name, t.shape);
    io::check_f16_range(r, tensors, allow_overflow);
  }

  NewDir d(out);
  std::vector<float> buf;
  for (const io::HfShard& shard : shards) {
    io::SafeTensorsStreamWriter w(d / shard.file, shard.tensors, {{"format", "pt"}});
    for (const io::TensorDecl& t : shard.tensors)
      io::copy_tensor(r, t.name, t.shape, w, t.name, buf, kPieceFloats, half);
    w.commit();
  }
  if (shards.size() > 1)
    write_file_checked(d / "model.safetensors.index.json",
                       io::hf_index_json(shards).dump(2) + "\n");
  const Tokenizer tok(tok_path);
  write_file_checked(
      d / "config.json",
      io::hf_config_json(m, io::torch_dtype_name(dt), tok.bos_id(), tok.eos_id()).dump(2) + "\n");
  write_file_checked(d / "generation_config.json",
                     io::hf_generation_config_json(tok.bos_id(), tok.eos_id()).dump(2) + "\n");
  copy_tokenizer(tok_path, d / "");
  d.commit();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("converted %s (%.2fM parameters) to hf:%s, %s, %zu file(s), in %.1f s\n",
              ckpt.c_str(), m.num_params() / 1e6, d.path().c_str(), io::torch_dtype_name(dt),
              shards.size(), s);
}

// --- checkpoint -> gguf:FILE ---------------------------------------------------------------

void checkpoint_to_gguf(const std::string& from, const std::string& out, const std::string& dtype,
                        bool allow_overflow) {
  const auto start = std::chrono::steady_clock::now();
  const io::GgmlType type = io::parse_gguf_dtype(dtype);
  const CheckedCheckpoint c = open_checkpoint(from);
  const Tokenizer tok(c.tok_path);
  std::optional<io::GgufBpeVocab> bpe;
  if (const ByteBpe* b = tok.byte_bpe()) {
    bpe = io::GgufBpeVocab{b->spellings(),     b->token_types(), b->merges(),
                           b->llama_cpp_pre(), tok.bos_id(),     tok.eos_id()};
    if (bpe->pre.empty())
      throw Error(c.tok_path +
                  ": llama.cpp knows a byte-level BPE's pre-tokenizer by name, and this one's is "
                  "neither Llama 3's (its pattern, with ignore_merges) nor GPT-2's");
  }
  if (fs::is_directory(out)) throw Error("gguf:" + out + " is a directory; give a file name");
  if (const fs::path parent = fs::path(out).parent_path(); !parent.empty())
    fs::create_directories(parent);
  // general.name: the run directory's name and the step ("kjv-small-step-600").
  const fs::path dir = clean(c.dir);
  std::string name = dir.filename().string();
  if (has_prefix(name, "step-") && dir.has_parent_path() && !dir.parent_path().filename().empty())
    name = dir.parent_path().filename().string() + "-" + name;
  io::GgufModelInfo info;
  info.name = name;
  info.tokenizer_path = c.tok_path;
  info.bpe = std::move(bpe);
  info.add_bos = true;   // generate puts <s> before the prompt; shards have <s> before each line
  info.add_eos = false;  // and no </s> after it
  io::write_llama_gguf(c.rc.model, *c.weights, info, out, type, allow_overflow);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("converted %s (%.2fM parameters) to gguf:%s, %s, %.1f MB, in %.1f s\n", c.dir.c_str(),
              c.rc.model.num_params() / 1e6, out.c_str(), io::ggml_type_name(type),
              static_cast<double>(fs::file_size(out)) / 1e6, s);
}

// Where convert writes, checked before it reads: never into what it reads (a run directory's
// latest checkpoint, or hf:DIR), and a GGUF file that exists only with --force.
void check_convert_output(const std::string& from, const std::string& to, bool force) {
  std::string src = has_prefix(from, "hf:") ? from.substr(3) : from;
  if (!has_prefix(from, "hf:") && !fs::exists(fs::path(src) / "trainer.json"))
    if (const std::string latest = latest_checkpoint(src); !latest.empty()) src = latest;
  if (has_prefix(to, "gguf:"))
    check_output_file("--to gguf:", to.substr(5), {src}, force);
  else
    check_output_dir("--to", has_prefix(to, "hf:") ? to.substr(3) : to, {}, {src});
}

}  // namespace

int run_convert(const std::string& from, const std::string& to, const std::string& dtype,
                double shard_mb, bool allow_overflow, bool force) {
  try {
    if (to != "gguf:" && to != "hf:") check_convert_output(from, to, force);
    if (has_prefix(to, "gguf:")) {
      if (to.size() == 5) throw Error("gguf: needs a file, as gguf:models/kjv-small.gguf");
      if (has_prefix(from, "hf:"))
        throw Error("--to gguf: takes a checkpoint; convert hf:DIR to a checkpoint first");
      checkpoint_to_gguf(from, to.substr(5), dtype.empty() ? "f16" : dtype, allow_overflow);
      return 0;
    }
    const bool from_hf = has_prefix(from, "hf:"), to_hf = has_prefix(to, "hf:");
    if (has_prefix(from, "gguf:")) throw Error("--from gguf:FILE is not supported (only --to)");
    if ((from_hf && from.size() == 3) || (to_hf && to.size() == 3))
      throw Error("hf: needs a directory, as hf:models/llama-2-7b");
    if (from_hf && !to_hf) {
      if (!dtype.empty())
        throw Error("--dtype sets the tensor type of hf:DIR output; a checkpoint holds fp32");
      if (allow_overflow)
        throw Error(
            "--allow-overflow is for fp16 output (hf:DIR or gguf:FILE); a checkpoint "
            "holds fp32");
      hf_to_checkpoint(from.substr(3), to);
      return 0;
    }
    if (!from_hf && to_hf) {
      checkpoint_to_hf(from, to.substr(3), dtype, shard_mb, allow_overflow);
      return 0;
    }
    throw Error(from_hf ? "--from and --to are both hf: directories; one side is a checkpoint"
                        : "--from " + from + " and --to " + to +
                              " are both checkpoints; one side is hf:DIR (or --to gguf:FILE)");
  } catch (const fs::filesystem_error& e) {
    throw Error(e.what());
  }
}

}  // namespace parallama
