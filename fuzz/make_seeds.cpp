// Writes the seed corpora of the fuzz harnesses (fuzz/corpus/NAME/), with the project's own
// writers, and their dictionaries of format words (fuzz/dict/NAME.dict):
//   build-fuzz/fuzz/fuzz_make_seeds fuzz
// (run from the repository root: the run-config seeds include configs/*.toml). The output is
// the same on every run.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "data/shard.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "tensor/error.h"
#include "train/run_config.h"

namespace fs = std::filesystem;
using namespace parallama;

namespace {

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!(f << text)) throw Error("cannot write " + path.string());
}

std::vector<float> ramp(int n, float start, float step) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = start + step * static_cast<float>(i);
  return v;
}

void safetensors_seeds(const fs::path& dir) {
  const std::vector<float> a = ramp(6, -1.0f, 0.5f), b = ramp(8, 0.25f, -0.125f);
  {
    io::SafeTensorsWriter w;
    w.add("weight", a.data(), {2, 3});
    w.write((dir / "f32_2x3.safetensors").string());
  }
  {
    io::SafeTensorsWriter w;
    w.add("model.embed_tokens.weight", b.data(), {4, 2}, DType::BF16);
    w.add("model.layers.0.self_attn.q_proj.weight", a.data(), {3, 2}, DType::F16);
    w.add("model.norm.weight", a.data(), {6});
    w.set_metadata({{"format", "pt"}, {"note", "seed"}});
    w.write((dir / "dtypes_metadata.safetensors").string());
  }
  {
    const float one[1] = {3.5f};
    io::SafeTensorsWriter w;
    w.add("empty", nullptr, {0, 4});
    w.add("scalar", one, {});
    w.add("nested.slices", b.data(), {2, 2, 2}, DType::BF16);
    w.write((dir / "empty_scalar_3d.safetensors").string());
  }
  {  // by hand: tensors listed out of file order, no padding, an unusual but valid layout
    const std::string header =
        "{\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"__metadata__\":{}}";
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(header.size() >> (8 * i));
    bytes += header;
    const unsigned char data[12] = {0, 0, 128, 63, 0, 0, 0, 192, 0, 60, 0, 124};  // 1, -2; 1, inf
    bytes.append(reinterpret_cast<const char*>(data), sizeof data);
    write_text(dir / "unordered_unpadded.safetensors", bytes);
  }
  {  // a tensor named "", which the writer cannot write: refused
    const std::string header = "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    std::string bytes(8, '\0');
    bytes[0] = static_cast<char>(header.size());
    bytes += header + std::string("\0\0\x80\x3f", 4);  // 1.0f
    write_text(dir / "empty_name_refused.safetensors", bytes);
  }
}

void shard_seeds(const fs::path& dir) {
  write_shard((dir / "w2_vocab300.bin").string(), {0, 1, 299, 42, 7, 299}, 300, 0xabcdef);
  write_shard((dir / "w4_vocab100000.bin").string(), {0, 65536, 99999, 5}, 100000, 42);
  write_shard((dir / "empty.bin").string(), {}, 4096, 0);
  write_shard((dir / "w4_largest_vocab.bin").string(), {0, 0x7ffffffe}, 0x7fffffff,
              0xffffffffffffffffull);
}

// The TOML text of a config as config_to_json gives it: every key.
std::string toml_of(const nlohmann::json& config) {
  std::string out;
  for (const auto& [section, keys] : config.items()) {
    out += "[" + section + "]\n";
    for (const auto& [key, value] : keys.items()) out += key + " = " + value.dump() + "\n";
  }
  return out;
}

void run_config_seeds(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator("configs"))
    if (e.path().extension() == ".toml") fs::copy_file(e.path(), dir / e.path().filename());
  RunConfig c = parse_run_config_text("[model]\npreset = \"kjv-small\"\n", "seed");
  write_text(dir / "every_key.toml", toml_of(config_to_json(c)));
  write_text(dir / "pipeline_fp16.toml",
             "[model]\npreset = \"tiny\"\n[train]\nseq_len = 16\nprecision = \"fp16\"\n"
             "loss_scale = 1024.0\nmicro_batches = 4\nrecompute = \"full\"\n[parallel]\npp = "
             "2\npp_layers = [1, 1]\n"
             "pp_schedule = \"gpipe\"\nreduce_dtype = \"bf16\"\n");  // the older name of compress
  write_text(dir / "custom_llama3_rope.toml",
             "[model]\npreset = \"custom\"\ndim = 64\nn_layers = 2\nn_heads = 4\nn_kv_heads = 2\n"
             "ffn_dim = 128\nvocab_size = 512\nmax_seq_len = 128\nnorm_eps = 1e-5\n"
             "rope_theta = 500000.0\ntie_embeddings = false\nrope_scaling = \"llama3\"\n"
             "rope_factor = 8.0\nrope_low_freq_factor = 1.0\nrope_high_freq_factor = 4.0\n"
             "rope_original_max_len = 64\n[train]\nseq_len = 128\n");
  write_text(dir / "overrides.toml",
             "[model]\npreset = \"tiny\"\n[train]\nseq_len = 8\n[optim]\nname = \"sgd\"\nmomentum "
             "= 0.9\n\n#overrides\n"
             "optim.lr=3e-4\ntrain.out_dir=2024\nparallel.sync=diloco\ndiloco.inner-steps=4\n"
             "data.dir=data/x y\n");
}

nlohmann::json trainer_json(int format) {
  RunConfig c =
      parse_run_config_text("[model]\npreset = \"tiny\"\n[train]\nseq_len = 16\n", "seed");
  nlohmann::json j = {
      {"format", format},
      {"step", 200},
      {"data_position", 1600},
      {"epoch", 3},
      {"loss", 3.25},
      {"tokenizer_hash", 16905335551117204539ull},
      {"checksums",
       {{"model.safetensors", "694d5853694539ef"}, {"optimizer.safetensors", "1ee4d7cfb5d59418"}}},
      {"config", config_to_json(c)},
      {"layout", {{"dp", 1}, {"tp", 1}, {"pp", 1}, {"sync", "allreduce"}}},
      {"rng", {{"data_seed", 1337}, {"data_order", "seeded permutation per epoch"}}},
      {"loss_scale", {{"scale", 65536.0}, {"clean_steps", 12}, {"skipped", 1}}}};
  if (format >= 2) {
    seal_json(j);
  } else {  // format 1 predates these settings (io/checkpoint.cpp refuses them in such a file)
    for (const char* key : {"rope_scaling", "rope_factor", "rope_low_freq_factor",
                            "rope_high_freq_factor", "rope_original_max_len"})
      j["config"]["model"].erase(key);
    for (const char* key : {"pp_balance", "sparse_embedding_grad", "link_probe_every", "balance",
                            "balance_every", "balance_cap"})
      j["config"]["parallel"].erase(key);
  }
  return j;
}

void trainer_json_seeds(const fs::path& dir) {
  write_text(dir / "format2.json", trainer_json(2).dump(1) + "\n");
  write_text(dir / "format1.json", trainer_json(1).dump(1) + "\n");
  nlohmann::json minimal = {
      {"format", 2},
      {"step", 0},
      {"data_position", 0},
      {"tokenizer_hash", 0},
      {"checksums",
       {{"model.safetensors", "0000000000000000"}, {"optimizer.safetensors", "ffffffffffffffff"}}}};
  seal_json(minimal);
  write_text(dir / "minimal.json", minimal.dump() + "\n");
}

// A libFuzzer dictionary entry: the word in double quotes, escaped.
std::string dict_entry(const std::string& word) {
  std::string out = "\"";
  for (const unsigned char c : word) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"\n";
}

void write_dict(const fs::path& path, const std::set<std::string>& words) {
  std::string text;
  for (const std::string& w : words) text += dict_entry(w);
  write_text(path, text);
}

void collect_keys(const nlohmann::json& j, std::set<std::string>& words) {
  if (!j.is_object()) return;
  for (const auto& [key, value] : j.items()) {
    words.insert("\"" + key + "\"");
    collect_keys(value, words);
  }
}

void dictionaries(const fs::path& dir) {
  write_dict(dir / "safetensors.dict",
             {"\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"F32\"", "\"BF16\"", "\"F16\"",
              "\"__metadata__\"", "[0,0]", "{}", "[]", "\"\"", "\\u0000"});
  std::set<std::string> toml = {"#overrides\n", "[",   "]",   " = ",    "\"",     "true",
                                "false",        "inf", "nan", "custom", "llama3", "none"};
  const nlohmann::json config = config_to_json(
      parse_run_config_text("[model]\npreset = \"kjv-small\"\n", "seed", {}, ConfigUse::none));
  for (const auto& [section, keys] : config.items()) {
    toml.insert("[" + section + "]\n");
    for (const auto& [key, value] : keys.items()) {
      toml.insert(key);
      toml.insert(section + "." + key + "=");
    }
  }
  for (const std::string& name : preset_names()) toml.insert(name);
  for (const char* value :
       {"adamw", "sgd", "attention", "full", "fp32", "bf16", "fp16", "1f1b", "gpipe", "interleaved",
        "allreduce", "ps", "ps-async", "local", "diloco"})
    toml.insert(value);
  write_dict(dir / "run_config.dict", toml);
  std::set<std::string> trainer;
  collect_keys(trainer_json(2), trainer);
  write_dict(dir / "trainer_json.dict", trainer);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FUZZ_DIR (run from the repository root)\n", argv[0]);
    return 2;
  }
  try {
    const fs::path root = fs::path(argv[1]) / "corpus";
    const std::pair<const char*, void (*)(const fs::path&)> sets[] = {
        {"safetensors", safetensors_seeds},
        {"shard", shard_seeds},
        {"run_config", run_config_seeds},
        {"trainer_json", trainer_json_seeds}};
    for (const auto& [name, make] : sets) {
      fs::remove_all(root / name);
      fs::create_directories(root / name);
      make(root / name);
    }
    fs::create_directories(fs::path(argv[1]) / "dict");
    dictionaries(fs::path(argv[1]) / "dict");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
