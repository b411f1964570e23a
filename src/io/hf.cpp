#include "io/hf.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>

#include "io/json_depth.h"
#include "io/paths.h"
#include "tensor/error.h"
#include "tensor/f16.h"

namespace fs = std::filesystem;

namespace parallama::io {

namespace {

using nlohmann::json;
constexpr int kMaxJsonDepth = 16;  // an index nests 2 levels

// One field of config.json, read strictly.
class Fields {
 public:
  Fields(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  int integer(const char* key, std::optional<int> fallback = std::nullopt) const {
    if (!has(key)) return fallback ? *fallback : missing(key);
    const json& v = j_[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 1 ||
        v.get<int64_t>() > std::numeric_limits<int>::max())
      fail(std::string("\"") + key + "\" is " + v.dump() + ", not a positive integer");
    return static_cast<int>(v.get<int64_t>());
  }

  float number(const char* key, std::optional<float> fallback = std::nullopt) const {
    if (!has(key)) return fallback ? *fallback : missing(key);
    const json& v = j_[key];
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      fail(std::string("\"") + key + "\" is " + v.dump() + ", not a finite number");
    const float f = static_cast<float>(v.get<double>());
    if (!std::isfinite(f) || (f == 0.0f && v.get<double>() != 0.0))
      fail(std::string("\"") + key + "\" is " + v.dump() +
           ", outside the range of a 32-bit float (it would become " +
           (f == 0.0f ? "0" : "infinite") + ")");
    return f;
  }

  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_boolean()) fail(std::string("\"") + key + "\" is not true or false");
    return j_[key].get<bool>();
  }

  std::string string(const char* key) const {
    if (!has(key)) return "";
    if (!j_[key].is_string()) fail(std::string("\"") + key + "\" is not a string");
    return j_[key].get<std::string>();
  }

  [[noreturn]] int missing(const char* key) const {
    fail(std::string("no \"") + key + "\" (a Llama config.json gives it)");
  }
  [[noreturn]] void fail(const std::string& what) const { throw Error(source_ + ": " + what); }

 private:
  const json& j_;
  std::string source_;
};

kernels::RopeScaling parse_rope_scaling(const json& r, const std::string& source) {
  kernels::RopeScaling s;
  if (r.is_null()) return s;
  if (!r.is_object()) throw Error(source + ": \"rope_scaling\" is neither null nor an object");
  const Fields f(r, source + ": rope_scaling");
  std::string type = f.string("rope_type");
  if (type.empty()) type = f.string("type");
  if (type.empty() || type == "default") return s;
  if (type != "llama3")
    throw Error(source + ": rope_scaling type '" + type +
                "' is not supported (parallama implements llama3 rope scaling only)");
  s.type = kernels::RopeType::llama3;
  s.factor = f.number("factor");
  s.low_freq_factor = f.number("low_freq_factor");
  s.high_freq_factor = f.number("high_freq_factor");
  s.original_max_len = f.integer("original_max_position_embeddings");
  return s;
}

}  // namespace

double shortest_double(float f) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf - 1, f);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

DType parse_hf_dtype(const std::string& name) {
  if (name == "f32" || name == "float32") return DType::F32;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  if (name == "f16" || name == "float16") return DType::F16;
  throw Error("unknown tensor type '" + name + "' (choose f32, bf16 or f16)");
}

const char* torch_dtype_name(DType t) {
  return t == DType::F32 ? "float32" : t == DType::BF16 ? "bfloat16" : "float16";
}

HfConfig parse_hf_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": not a JSON object");
  const Fields f(j, source);
  if (f.has("architectures")) {
    const json& a = j["architectures"];
    if (!a.is_array() || std::find(a.begin(), a.end(), json("LlamaForCausalLM")) == a.end())
      f.fail("architectures " + a.dump() + " is not LlamaForCausalLM (only Llama models convert)");
  }
  if (const std::string type = f.string("model_type"); !type.empty() && type != "llama")
    f.fail("model_type '" + type + "' is not llama (only Llama models convert)");
  if (const std::string act = f.string("hidden_act"); !act.empty() && act != "silu")
    f.fail("hidden_act '" + act + "' is not silu (Llama's SwiGLU)");
  for (const char* bias : {"attention_bias", "mlp_bias"})
    if (f.boolean(bias, false)) f.fail(std::string("\"") + bias + "\": parallama has no biases");
  HfConfig out;
  LlamaConfig& m = out.model;
  m.name = "custom";
  m.dim = f.integer("hidden_size");
  m.n_layers = f.integer("num_hidden_layers");
  m.n_heads = f.integer("num_attention_heads");
  m.n_kv_heads = f.integer("num_key_value_heads", m.n_heads);
  m.ffn_dim = f.integer("intermediate_size");
  m.vocab_size = f.integer("vocab_size");
  m.max_seq_len = f.integer("max_position_embeddings", 2048);
  m.norm_eps = f.number("rms_norm_eps", 1e-6f);
  m.rope_theta = f.number("rope_theta", 10000.0f);
  m.tie_embeddings = f.boolean("tie_word_embeddings", false);
  m.rope_scaling = parse_rope_scaling(j.value("rope_scaling", json()), source);
  if (f.has("head_dim") && m.dim % m.n_heads == 0 && f.integer("head_dim") != m.head_dim())
    f.fail("head_dim " + std::to_string(f.integer("head_dim")) +
           " is not hidden_size / num_attention_heads (" + std::to_string(m.head_dim()) + ")");
  out.torch_dtype = f.string("torch_dtype");
  try {
    m.validate();
  } catch (const Error& e) {
    f.fail(e.what());
  }
  return out;
}

nlohmann::ordered_json hf_config_json(const LlamaConfig& m, const std::string& torch_dtype,
                                      int32_t bos, int32_t eos) {
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = m.dim;
  j["intermediate_size"] = m.ffn_dim;
  j["num_hidden_layers"] = m.n_layers;
  j["num_attention_heads"] = m.n_heads;
  j["num_key_value_heads"] = m.n_kv_heads;
  j["head_dim"] = m.head_dim();
  j["vocab_size"] = m.vocab_size;
  j["max_position_embeddings"] = m.max_seq_len;
  j["rms_norm_eps"] = shortest_double(m.norm_eps);
  j["rope_theta"] = shortest_double(m.rope_theta);
  if (m.rope_scaling.type == kernels::RopeType::llama3) {
    const kernels::RopeScaling& r = m.rope_scaling;
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", shortest_double(r.factor)},
                         {"low_freq_factor", shortest_double(r.low_freq_factor)},
                         {"high_freq_factor", shortest_double(r.high_freq_factor)},
                         {"original_max_position_embeddings", r.original_max_len}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = m.tie_embeddings;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["bos_token_id"] = bos;
  j["eos_token_id"] = eos;
  j["torch_dtype"] = torch_dtype;
  j["use_cache"] = true;
  return j;
}

nlohmann::ordered_json hf_generation_config_json(int32_t bos, int32_t eos) {
  return {{"bos_token_id", bos}, {"eos_token_id", eos}};
}

// ---------------------------------------------------------------------------------------------
// Reading the weights

HfWeights::HfWeights(const std::string& dir) : dir_(dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::map<std::string, std::string> map;  // tensor -> file
  if (fs::exists(single)) {
    files_.push_back(std::make_unique<SafeTensorsReader>(single.string()));
    for (const TensorInfo& t : files_.back()->tensors()) where_[t.name] = files_.back().get();
    return;
  }
  if (!fs::exists(index)) {
    const bool bin = fs::exists(fs::path(dir) / "pytorch_model.bin") ||
                     fs::exists(fs::path(dir) / "pytorch_model.bin.index.json");
    throw Error(dir + ": no model.safetensors or model.safetensors.index.json" +
                (bin ? " (PyTorch .bin weights are not read: save them as safetensors)" : ""));
  }
  std::ifstream f = open_input(index, "index", kMaxConfigBytes);
  json j;
  try {
    j = parse_json_bounded(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>(),
                           kMaxJsonDepth);
  } catch (const json::exception&) {
    throw Error(index.string() + ": not valid JSON");
  } catch (const Error& e) {
    throw Error(index.string() + ": " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(index.string() + ": no \"weight_map\" object");
  std::map<std::string, const SafeTensorsReader*> opened;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string()) throw Error(index.string() + ": the file of " + name + " is no string");
    const std::string fname = file.get<std::string>();
    if (fname.empty() || fname.find('/') != std::string::npos || fname[0] == '.')
      throw Error(index.string() + ": '" + fname + "' is not a file name of the directory");
    auto it = opened.find(fname);
    if (it == opened.end()) {
      files_.push_back(std::make_unique<SafeTensorsReader>((fs::path(dir) / fname).string()));
      it = opened.emplace(fname, files_.back().get()).first;
    }
    if (!it->second->has(name))
      throw Error(index.string() + ": names " + fname + " for tensor " + name +
                  ", which that file does not hold");
    where_[name] = it->second;
  }
}

const SafeTensorsReader& HfWeights::file_of(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end())
    throw Error(dir_ + ": the weights have no tensor " + name + " (a Llama model needs it)");
  return *it->second;
}

std::vector<std::string> HfWeights::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing them

std::vector<HfShard> plan_hf_shards(const std::vector<TensorDecl>& tensors, uint64_t max_bytes) {
  std::vector<HfShard> shards;
  for (const TensorDecl& t : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(numel(t.shape)) * dtype_size(t.dtype);
    if (shards.empty() || (shards.back().bytes > 0 && shards.back().bytes + bytes > max_bytes))
      shards.emplace_back();
    shards.back().tensors.push_back(t);
    shards.back().bytes += bytes;
  }
  if (shards.empty()) shards.emplace_back();
  const size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    shards[i].file = n == 1 ? "model.safetensors" : name;
  }
  return shards;
}

nlohmann::ordered_json hf_index_json(const std::vector<HfShard>& shards) {
  uint64_t total = 0;
  nlohmann::json map = nlohmann::json::object();  // sorted by name, as Hugging Face writes it
  for (const HfShard& s : shards) {
    total += s.bytes;
    for (const TensorDecl& t : s.tensors) map[t.name] = s.file;
  }
  nlohmann::ordered_json j;
  j["metadata"] = {{"total_size", total}};
  j["weight_map"] = map;
  return j;
}

void read_f32_pieces(const TensorSource& r, const std::string& name, const Shape& shape,
                     std::vector<float>& buf, int64_t piece_floats,
                     const std::function<void(float*, int64_t)>& got) {
  const int64_t n = numel(shape);
  if (n == 0) return;
  if (shape.size() < 2) {  // a vector (a norm's weights) at once
    buf.resize(static_cast<size_t>(n));
    r.read_f32(name, buf.data(), shape);
    got(buf.data(), n);
    return;
  }
  const int64_t row = n / shape[0];
  const int64_t rows = std::max<int64_t>(1, piece_floats / std::max<int64_t>(row, 1));
  buf.resize(static_cast<size_t>(std::min(rows, shape[0]) * row));
  for (int64_t at = 0; at < shape[0]; at += rows) {
    const int64_t count = std::min(rows, shape[0] - at);
    r.read_f32_slice(name, buf.data(), shape, 0, at, count);
    got(buf.data(), count * row);
  }
}

void copy_tensor(const TensorSource& r, const std::string& name, const Shape& shape,
                 SafeTensorsStreamWriter& out, const std::string& out_name, std::vector<float>& buf,
                 int64_t piece_floats, bool clamp_f16) {
  read_f32_pieces(r, name, shape, buf, piece_floats, [&](float* x, int64_t n) {
    if (clamp_f16) clamp_f16_overflow(x, n);
    out.append(out_name, x, n);
  });
}

void check_f16_range(const TensorSource& r,
                     const std::vector<std::pair<std::string, Shape>>& tensors,
                     bool allow_overflow) {
  constexpr int64_t kPiece = int64_t{1} << 20;
  std::vector<float> buf;
  std::string named;
  int64_t total = 0, listed = 0, over = 0;
  for (const auto& [name, shape] : tensors) {
    int64_t count = 0;
    read_f32_pieces(r, name, shape, buf, kPiece, [&](float* x, int64_t n) {
      for (int64_t i = 0; i < n; ++i) count += f16_overflows(x[i]);
    });
    if (count == 0) continue;
    total += count, ++over;
    if (listed++ < 3)
      named += (named.empty() ? "" : ", ") + name + " (" + std::to_string(count) + ")";
  }
  if (total == 0) return;
  if (over > 3) named += " and " + std::to_string(over - 3) + " more tensor(s)";
  const std::string what = std::to_string(total) +
                           " value(s) beyond fp16's range (|x| >= 65520, which would become ±inf) "
                           "in " +
                           named;
  if (!allow_overflow)
    throw Error(
        r.path() + ": " + what +
        "; nothing written: choose --dtype f32 (or bf16 for hf:DIR), or --allow-overflow to clamp "
        "them to ±65504");
  std::fprintf(stderr, "warning: %s: %s: clamped to ±65504 (--allow-overflow)\n", r.path().c_str(),
               what.c_str());
}

}  // namespace parallama::io
