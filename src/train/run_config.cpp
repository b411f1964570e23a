#include "train/run_config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <set>

#include "io/paths.h"
#include "model/llama.h"
#include "parallel/data_parallel.h"
#include "parallel/mesh.h"
#include "parallel/schedule.h"
#include "tensor/error.h"
#include "tensor/utf8.h"

namespace parallama {

namespace {

// The settings that take one of a few names: their text, read and written through the one table
// of each (parse_* throws Error naming the choices).
Recompute parse_setting(const std::string& s, Recompute*) {
  return parse_recompute(s);
}
Precision parse_setting(const std::string& s, Precision*) {
  return parse_precision(s);
}
PipeSchedule parse_setting(const std::string& s, PipeSchedule*) {
  return parse_schedule(s);
}
PpBalance parse_setting(const std::string& s, PpBalance*) {
  return parse_pp_balance(s);
}
Compress parse_setting(const std::string& s, Compress*) {
  return parse_compress(s);
}
OuterCompress parse_setting(const std::string& s, OuterCompress*) {
  return parse_outer_compress(s);
}
Sync parse_setting(const std::string& s, Sync*) {
  return parse_sync(s);
}
Balance parse_setting(const std::string& s, Balance*) {
  return parse_balance(s);
}
OptimKind parse_setting(const std::string& s, OptimKind*) {
  return parse_optim_kind(s);
}
kernels::RopeType parse_setting(const std::string& s, kernels::RopeType*) {
  return kernels::parse_rope_type(s);
}
class Reader {
 public:
  // raw: the text of each command-line setting as typed ("section.key" → text). A string setting
  // takes it as it is even where it reads as another TOML type (--train.out_dir 2024).
  Reader(toml::table& root, std::string source, std::map<std::string, std::string> raw = {})
      : root_(root), source_(std::move(source)), raw_(std::move(raw)) {}

  template <class T>
  void get(const std::string& section, const std::string& key, T& out) {
    const std::string full = section + "." + key;
    seen_.insert(full);
    toml::table* sec = root_[section].as_table();
    if (!sec) return;
    toml::node* n = sec->get(key);
    if (!n) return;
    if constexpr (std::is_same_v<T, bool>) {
      if (!n->is_boolean()) fail(full, "must be true or false");
      out = n->as_boolean()->get();
    } else if constexpr (std::is_integral_v<T>) {
      if (!n->is_integer()) fail(full, "must be an integer");
      const int64_t v = n->as_integer()->get();
      if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
          (v > 0 &&
           static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
        fail(full, "is out of range");
      out = static_cast<T>(v);
    } else if constexpr (std::is_floating_point_v<T>) {
      double d = 0;
      if (n->is_integer())
        d = static_cast<double>(n->as_integer()->get());
      else if (n->is_floating_point())
        d = n->as_floating_point()->get();
      else
        fail(full, "must be a number");
      out = static_cast<T>(d);
      if (!std::isfinite(d)) fail(full, "must be a finite number");
      // A value that the setting's float cannot hold, refused rather than turned to inf or 0.
      if (!std::isfinite(static_cast<double>(out)) || (out == 0 && d != 0))
        fail(full, "must be a finite number within the range of a " +
                       std::to_string(8 * sizeof(T)) + "-bit float");
    } else if constexpr (std::is_same_v<T, std::vector<int>>) {
      const toml::array* arr = n->as_array();
      if (!arr) fail(full, "must be a list of integers, e.g. [2, 2, 1]");
      out.clear();
      for (const toml::node& e : *arr) {
        if (!e.is_integer()) fail(full, "must be a list of integers, e.g. [2, 2, 1]");
        const int64_t v = e.as_integer()->get();
        if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
          fail(full, "has an element out of range");
        out.push_back(static_cast<int>(v));
      }
    } else if constexpr (std::is_enum_v<T>) {
      std::string text;
      if (n->is_string())
        text = n->as_string()->get();
      else if (raw_.count(full))
        text = raw_.at(full);
      else
        fail(full, "must be a string");
      try {
        out = parse_setting(text, static_cast<T*>(nullptr));
      } catch (const Error& e) {
        throw Error(source_ + ": " + e.what());
      }
    } else {
      if (n->is_string())
        out = n->as_string()->get();
      else if (raw_.count(full))
        out = raw_.at(full);
      else
        fail(full, "must be a string");
      if (!valid_utf8(out)) fail(full, "must be valid UTF-8 text");
    }
  }

  // Every key in the file must have been asked for.
  void check_unknown() const {
    for (auto&& [sec_name, sec_node] : root_) {
      const std::string sec(sec_name.str());
      if (!sec_node.is_table())
        throw Error(source_ + ": top-level key '" + sec + "' must be a [section]");
      for (auto&& [key, _] : *sec_node.as_table()) {
        const std::string full = sec + "." + std::string(key.str());
        if (!seen_.count(full)) throw Error(source_ + ": unknown key '" + full + "'");
      }
    }
  }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(source_ + ": key '" + key + "' " + what);
  }

 private:
  toml::table& root_;
  std::string source_;
  std::map<std::string, std::string> raw_;
  std::set<std::string> seen_;
};

// The one list of configuration keys: reading, checking for unknown keys, writing the config into
// checkpoints and the table of settings (`parallama settings`) all walk it, with what each means.
// (model.preset is read first: it sets the defaults of [model].)
template <class F>
void for_each_field(RunConfig& c, F&& f) {
  LlamaConfig& m = c.model;
  f("model", "dim", m.dim, "model width C (the preset's unless given)");
  f("model", "n_layers", m.n_layers, "transformer layers L");
  f("model", "n_heads", m.n_heads, "attention heads H");
  f("model", "n_kv_heads", m.n_kv_heads, "key/value heads (grouped-query attention when below H)");
  f("model", "ffn_dim", m.ffn_dim, "hidden width of the SwiGLU MLP");
  f("model", "vocab_size", m.vocab_size, "vocabulary size (the tokenizer's, or more)");
  f("model", "max_seq_len", m.max_seq_len, "longest sequence the model is built for");
  f("model", "norm_eps", m.norm_eps, "RMSNorm epsilon");
  f("model", "rope_theta", m.rope_theta, "rotary embedding base");
  f("model", "tie_embeddings", m.tie_embeddings, "the output head shares the token embedding");
  f("model", "rope_scaling", m.rope_scaling.type, "rotary frequency scaling (llama3: Llama 3.1)");
  f("model", "rope_factor", m.rope_scaling.factor, "llama3 rope scaling: factor");
  f("model", "rope_low_freq_factor", m.rope_scaling.low_freq_factor,
    "llama3 rope scaling: low-frequency factor");
  f("model", "rope_high_freq_factor", m.rope_scaling.high_freq_factor,
    "llama3 rope scaling: high-frequency factor");
  f("model", "rope_original_max_len", m.rope_scaling.original_max_len,
    "llama3 rope scaling: the pre-training context length");
  TrainConfig& t = c.train;
  f("train", "batch_size", t.batch_size, "sequences per micro-batch and rank (B)");
  f("train", "seq_len", t.seq_len, "tokens per sequence (T)");
  f("train", "micro_batches", t.micro_batches,
    "micro-batches per optimizer step (gradient accumulation)");
  f("train", "steps", t.steps, "optimizer steps of the run");
  f("train", "seed", t.seed, "parameter initialisation and data order");
  f("train", "threads", t.threads, "OpenMP threads per rank; 0: all cores (or OMP_NUM_THREADS)");
  f("train", "grad_clip", t.grad_clip, "global gradient-norm clipping; 0: off");
  f("train", "log_every", t.log_every, "steps between log lines when not on a terminal");
  f("train", "val_every", t.val_every, "steps between validation losses; 0: only at the end");
  f("train", "val_batches", t.val_batches, "global batches of validation data per measurement");
  f("train", "ckpt_every", t.ckpt_every, "steps between checkpoints; 0: only at the end");
  f("train", "ckpt_async", t.ckpt_async,
    "copy each checkpoint to memory (/dev/shm) and write it to disk on a thread while training "
    "goes on");
  f("train", "ckpt_per_rank", t.ckpt_per_rank,
    "every rank writes its own pieces of each checkpoint (its slice, stage and ZeRO shard) in "
    "parallel, with an index (pieces.json), instead of one rank writing whole tensors; the run "
    "directory must be on a file system every host shares");
  f("train", "out_dir", t.out_dir, "the run directory: checkpoints, metrics, summary, report");
  f("train", "recompute", t.recompute,
    "activation recompute: attention (its probabilities) or full (each layer's forward)");
  f("train", "precision", t.precision,
    "matrix multiplies in fp32, or bf16 / fp16 mixed precision with fp32 master weights");
  f("train", "loss_scale", t.loss_scale, "fp16: the first loss scale (a power of two)");
  f("train", "loss_scale_window", t.loss_scale_window,
    "fp16: clean steps before the loss scale doubles");
  OptimConfig& o = c.optim;
  f("optim", "name", o.name, "the optimizer");
  f("optim", "lr", o.lr, "peak learning rate");
  f("optim", "min_lr", o.min_lr, "learning rate at the end of the cosine decay");
  f("optim", "warmup_steps", o.warmup_steps, "steps of linear warmup");
  f("optim", "beta1", o.beta1, "AdamW first-moment decay");
  f("optim", "beta2", o.beta2, "AdamW second-moment decay");
  f("optim", "eps", o.eps, "AdamW epsilon");
  f("optim", "weight_decay", o.weight_decay, "decoupled weight decay, on matrices only");
  f("optim", "momentum", o.momentum, "SGD momentum");
  f("optim", "dampening", o.dampening, "SGD dampening");
  f("optim", "nesterov", o.nesterov, "SGD with Nesterov momentum");
  f("data", "dir", c.data.dir, "the output of `parallama prepare`: token shards and tokenizer");
  f("parallel", "dp", c.parallel.layout.dp,
    "data-parallel replicas (under a launcher: the processes over tp × pp)");
  f("parallel", "tp", c.parallel.layout.tp, "tensor-parallel ranks per replica");
  f("parallel", "pp", c.parallel.layout.pp, "pipeline stages");
  f("parallel", "pp_layers", c.parallel.layout.pp_layers,
    "layers per (virtual) stage by hand; empty: balanced by pp_balance");
  f("parallel", "pp_schedule", c.parallel.layout.pp_schedule, "the pipeline schedule");
  f("parallel", "pp_virtual", c.parallel.layout.pp_virtual, "model chunks per rank (interleaved)");
  f("parallel", "pp_trace", c.parallel.layout.pp_trace,
    "write the pipeline timeline here (Chrome trace JSON); empty: none");
  f("parallel", "pp_balance", c.parallel.layout.pp_balance,
    "stage boundaries by FLOP cost, by a measured pass, or by layers alone");
  f("parallel", "bucket_mb", c.parallel.grads.bucket_mb, "gradient all-reduce bucket size, MiB");
  f("parallel", "sparse_embedding_grad", c.parallel.grads.sparse_embedding,
    "all-reduce only the embedding rows the step's tokens touched (exact)");
  f("parallel", "compress", c.parallel.grads.compress,
    "how gradient buckets travel over the replicas: none (fp32), bf16 (half the bytes), int8 "
    "(blockwise, about a quarter, with error feedback), powersgd (low-rank factors, with error "
    "feedback); summed in fp32");
  f("parallel", "powersgd_rank", c.parallel.grads.powersgd_rank,
    "compress = powersgd: the rank of each matrix's factors");
  f("parallel", "compress_after", c.parallel.grads.compress_after,
    "steps whose gradients travel uncompressed first");
  f("parallel", "zero", c.parallel.grads.zero,
    "ZeRO stage: 1 shards the optimizer state, 2 also the gradients");
  f("parallel", "check_collectives", c.parallel.watch.check_collectives,
    "stamp every collective and compare across ranks (debugging)");
  f("parallel", "link_probe_every", c.parallel.watch.link_probe_every,
    "steps between probes of the links between hosts; 0: off");
  f("parallel", "timeout_s", c.parallel.watch.timeout_s,
    "seconds a collective may take before the silent rank is named");
  f("parallel", "sync", c.parallel.strategy.sync, "how replicas stay together");
  f("parallel", "balance", c.parallel.balance.mode,
    "batch shares: equal, or following each rank's measured speed");
  f("parallel", "balance_every", c.parallel.balance.every,
    "dynamic balance: steps between re-plans");
  f("parallel", "balance_cap", c.parallel.balance.cap,
    "dynamic balance: the largest share, times the equal one");
  f("ps", "servers", c.parallel.strategy.ps_servers, "parameter-server ranks (the last ones)");
  f("ps", "max-staleness", c.parallel.strategy.ps_max_staleness,
    "ps-async: steps a worker may run ahead of the slowest");
  f("local", "period", c.parallel.strategy.local_period,
    "local SGD: steps between parameter averages");
  f("diloco", "inner-steps", c.parallel.strategy.diloco_inner_steps,
    "inner AdamW steps between outer steps");
  f("diloco", "outer-lr", c.parallel.strategy.diloco_outer_lr, "outer Nesterov SGD learning rate");
  f("diloco", "outer-momentum", c.parallel.strategy.diloco_outer_momentum,
    "outer Nesterov momentum");
  f("diloco", "compress", c.parallel.strategy.diloco_compress,
    "how the outer gradient travels: none (fp32), int8 or int4 (blockwise, with error feedback)");
  f("bench", "steps", c.bench.steps, "timed steps of `parallama bench`");
  f("bench", "warmup", c.bench.warmup, "untimed steps before them");
}

}  // namespace

Overrides parse_overrides(const std::vector<std::string>& args) {
  Overrides out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a.find('.') == std::string::npos)
      throw Error("unexpected argument '" + a + "' (settings are given as --section.key value)");
    const size_t eq = a.find('=');
    if (eq != std::string::npos) {
      out.emplace_back(a.substr(2, eq - 2), a.substr(eq + 1));
    } else {
      if (i + 1 >= args.size()) throw Error("setting '" + a + "' has no value");
      out.emplace_back(a.substr(2), args[++i]);
    }
  }
  return out;
}

namespace {

constexpr size_t kMaxKeyParts = 32;  // parallama's keys have two (section.key)

// The most parts of one dotted key in TOML text (a.b."c" has 3), outside strings and comments.
// toml++ builds a dotted key's tables by recursion, so a key of thousands of parts (a table
// header [a.a.a...] of a few hundred kilobytes) overflows the stack inside the parser; such text
// is refused before it is parsed. Nested arrays and inline tables toml++ bounds itself.
size_t most_key_parts(const std::string& s) {
  enum { other, part, dot } prev = other;
  size_t best = 0, parts = 0;
  auto begin_part = [&] {
    parts = prev == dot ? parts + 1 : 1;
    best = std::max(best, parts);
    prev = part;
  };
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '"' || c == '\'') {  // a string: a quoted key part, or a value
      const bool multi = s.compare(i, 3, std::string(3, c)) == 0;
      const size_t quotes = multi ? 3 : 1;
      size_t j = i + quotes;
      while (j < s.size() && s.compare(j, quotes, std::string(quotes, c)) != 0) {
        if (!multi && s[j] == '\n') break;
        j += c == '"' && s[j] == '\\' ? 2 : 1;
      }
      j += quotes;
      while (multi && j < s.size() && s[j] == c) ++j;  // """a""""": up to two quotes close it
      i = j;
      begin_part();
    } else if (c == '#') {
      while (i < s.size() && s[i] != '\n') ++i;
      prev = other;
    } else if (c == ' ' || c == '\t') {
      ++i;
    } else if (c == '.') {
      prev = prev == part ? dot : other;
      ++i;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') {
      while (i < s.size() &&
             (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_' || s[i] == '-'))
        ++i;
      begin_part();
    } else {
      prev = other;
      ++i;
    }
  }
  return best;
}

toml::table parse_toml(const std::string& text, const std::string& source) {
  if (most_key_parts(text) > kMaxKeyParts)
    throw Error(source + ": a dotted key has more than " + std::to_string(kMaxKeyParts) +
                " parts (parallama's keys are section.key)");
  try {
    return toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw Error(source + ":" + std::to_string(b.line) + ":" + std::to_string(b.column) + ": " +
                std::string(e.description()));
  }
}

// Command-line settings go into the table: a value that parses as TOML keeps its type (3e-4 →
// float, 8 → integer, true → bool); anything else is a string, so paths need no quoting. Their
// text as typed is kept in raw, for string settings.
void apply_overrides(toml::table& root, const Overrides& overrides,
                     std::map<std::string, std::string>& raw) {
  for (const auto& [key, value] : overrides) {
    const size_t dot = key.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == key.size() ||
        key.find('.', dot + 1) != std::string::npos)
      throw Error("setting '--" + key + "' must look like --section.key");
    const std::string sec = key.substr(0, dot), k = key.substr(dot + 1);
    if (!root.contains(sec)) root.insert(sec, toml::table{});
    toml::table* t = root[sec].as_table();
    if (!t) throw Error("setting '--" + key + "': '" + sec + "' is not a section");
    toml::table parsed;
    try {
      parsed = parse_toml("v = " + value, "--" + key);
    } catch (const Error&) {
      parsed = toml::table{};
    }
    if (parsed.size() != 1 || !parsed.contains("v")) {  // not one TOML value: a string
      parsed = toml::table{};
      parsed.insert("v", value);
    }
    t->insert_or_assign(k, *parsed.get("v"));
    raw[key] = value;
  }
}

// parallel.reduce_dtype, the setting parallel.compress took the place of (older configurations and
// checkpoints): "fp32" reads as compress none, "bf16" as bf16.
void read_reduce_dtype(Reader& r, toml::table& root, RunConfig& c) {
  std::string legacy;
  r.get("parallel", "reduce_dtype", legacy);
  if (legacy.empty()) return;
  if (legacy != "fp32" && legacy != "bf16")
    throw Error("parallel.reduce_dtype must be \"fp32\" or \"bf16\", not \"" + legacy +
                "\" (parallel.compress is its successor: none, bf16 or int8)");
  const toml::table* par = root["parallel"].as_table();
  const Compress said = legacy == "bf16" ? Compress::bf16 : Compress::none;
  if (par && par->contains("compress") && c.parallel.grads.compress != said)
    throw Error("parallel.reduce_dtype = \"" + legacy + "\" and parallel.compress = \"" +
                compress_name(c.parallel.grads.compress) + "\" disagree; give compress alone");
  c.parallel.grads.compress = said;
}

RunConfig read_table(toml::table& root, const std::string& source,
                     std::map<std::string, std::string> raw, ConfigUse use) {
  RunConfig c;
  Reader r(root, source, std::move(raw));
  std::string preset = "tiny";
  r.get("model", "preset", preset);
  c.model = llama_preset(preset);
  for_each_field(c, [&](const char* sec, const char* key, auto& field, const char*) {
    r.get(sec, key, field);
  });
  read_reduce_dtype(r, root, c);
  r.check_unknown();
  try {
    if (use != ConfigUse::none) c.validate(use);
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
  return c;
}

}  // namespace

RunConfig parse_run_config_text(const std::string& text, const std::string& source,
                                const Overrides& overrides, ConfigUse use) {
  toml::table root = parse_toml(text, source);
  std::map<std::string, std::string> raw;
  apply_overrides(root, overrides, raw);
  return read_table(root, source, std::move(raw), use);
}

// The data-parallel replicas that `processes` make under the run's tp, pp and parameter servers.
static int replicas_of(int processes, const ParallelConfig& p) {
  const int servers = p.servers(), per = p.layout.tp * p.layout.pp;
  const int workers = processes - servers;
  if (workers < per || workers % per != 0)
    throw Error(std::to_string(processes) + " processes" +
                (servers ? " less " + std::to_string(servers) + " parameter server(s)" : "") +
                " do not make whole replicas of --tp " + std::to_string(p.layout.tp) + " × --pp " +
                std::to_string(p.layout.pp) + " (" + std::to_string(per) +
                " processes each); launch a multiple of " + std::to_string(per) +
                (servers ? " plus the servers" : "") + ", or set --dp");
  return workers / per;
}

RunConfig load_run_config(const std::string& path, const Overrides& overrides, ConfigUse use,
                          int processes) {
  toml::table root;
  if (!path.empty()) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
      throw Error("--config " + path + " is a directory, not a TOML configuration file");
    std::ifstream f = open_input(path, "--config", kMaxConfigBytes);
    const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    if (f.bad()) throw Error("cannot read configuration file '" + path + "'");
    root = parse_toml(text, path);
    if (root.empty())
      throw Error(path +
                  ": the configuration file holds no settings (leave out --config for the "
                  "defaults)");
  }
  std::map<std::string, std::string> raw;
  apply_overrides(root, overrides, raw);
  const std::string source = path.empty() ? "command line" : path;
  RunConfig c = read_table(root, source, std::move(raw), use);
  const toml::table* parallel = root["parallel"].as_table();
  if (processes > 0 && !(parallel && parallel->contains("dp")))
    c.parallel.layout.dp = replicas_of(processes, c.parallel);
  return c;
}

std::vector<SettingInfo> settings_table() {
  RunConfig c = load_run_config("", {}, ConfigUse::none);
  std::vector<std::string> presets = preset_names();
  std::vector<SettingInfo> out = {{"model.preset", "one of the presets", "\"tiny\"",
                                   "the model's shape; the [model] defaults below are tiny's",
                                   presets}};
  for_each_field(c, [&](const char* sec, const char* key, auto& field, const char* meaning) {
    using T = std::decay_t<decltype(field)>;
    SettingInfo s{std::string(sec) + "." + key, "", "", meaning, {}};
    if constexpr (std::is_enum_v<T>) {
      s.type = "one of";
      s.choices = all_names<T>();
      s.default_value = nlohmann::json(name_of(field)).dump();
    } else {
      s.type = std::is_same_v<T, bool>               ? "true or false"
               : std::is_integral_v<T>               ? "integer"
               : std::is_floating_point_v<T>         ? "number"
               : std::is_same_v<T, std::vector<int>> ? "list of integers"
                                                     : "text";
      s.default_value = nlohmann::json(field).dump();
      if constexpr (std::is_same_v<T, float>) {  // the float's shortest text, not its double's
        char buf[32];
        const auto end = std::to_chars(buf, buf + sizeof buf, field).ptr;
        s.default_value.assign(buf, end);
        if (s.default_value.find_first_of(".en") == std::string::npos) s.default_value += ".0";
      }
    }
    out.push_back(std::move(s));
  });
  return out;
}

nlohmann::json config_to_json(const RunConfig& c) {
  nlohmann::json j;
  j["model"]["preset"] = c.model.name;
  RunConfig copy = c;
  for_each_field(copy, [&](const char* sec, const char* key, auto& field, const char*) {
    if constexpr (std::is_enum_v<std::decay_t<decltype(field)>>)
      j[sec][key] = name_of(field);
    else
      j[sec][key] = field;
  });
  return j;
}

// The JSON values go into the table with their own types, so that a string stays a string
// whatever it looks like ("2024", "1979-05-27").
RunConfig config_from_json(const nlohmann::json& j, const std::string& source, ConfigUse use) {
  if (!j.is_object()) throw Error(source + ": config is not a table of sections");
  toml::table root;
  for (const auto& [sec, table] : j.items()) {
    if (!table.is_object()) throw Error(source + ": config section '" + sec + "' is not a table");
    toml::table t;
    for (const auto& [key, v] : table.items()) {
      const std::string full = sec + "." + key;
      switch (v.type()) {
        case nlohmann::json::value_t::string:
          t.insert(key, v.get<std::string>());
          break;
        case nlohmann::json::value_t::boolean:
          t.insert(key, v.get<bool>());
          break;
        case nlohmann::json::value_t::number_integer:
          t.insert(key, v.get<int64_t>());
          break;
        case nlohmann::json::value_t::number_unsigned:
          if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            throw Error(source + ": config key '" + full + "' is out of range");
          t.insert(key, static_cast<int64_t>(v.get<uint64_t>()));
          break;
        case nlohmann::json::value_t::number_float:
          t.insert(key, v.get<double>());
          break;
        case nlohmann::json::value_t::array: {
          toml::array arr;
          for (const auto& e : v) {
            if (!e.is_number_integer())
              throw Error(source + ": config key '" + full + "' must be a list of integers");
            arr.push_back(e.get<int64_t>());
          }
          t.insert(key, std::move(arr));
          break;
        }
        default:
          throw Error(source + ": config key '" + full + "' has a value of no config type (" +
                      std::string(v.type_name()) + ")");
      }
    }
    root.insert(sec, std::move(t));
  }
  return read_table(root, source, {}, use);
}

RunConfig checkpoint_config(const nlohmann::json& trainer_json, const std::string& source) {
  if (!trainer_json.contains("config"))
    throw Error(source + ": no \"config\"; not a checkpoint of a training run");
  // Settings that older checkpoints record and parallama no longer has (a test aid that slowed
  // a worker from inside the program); they changed nothing about the model or the data.
  static const std::pair<const char*, const char*> kRetired[] = {{"ps", "slow-rank"},
                                                                 {"ps", "slow-ms"}};
  nlohmann::json config = trainer_json["config"];
  for (const auto& [section, key] : kRetired)
    if (config.is_object() && config.contains(section) && config[section].is_object())
      config[section].erase(key);
  return config_from_json(config, source);
}

MeshShape mesh_shape(const RunConfig& c) {
  const ParallelConfig& p = c.parallel;
  MeshShape s;
  s.dp = p.layout.dp, s.tp = p.layout.tp, s.pp = p.layout.pp, s.pp_layers = p.layout.pp_layers,
  s.pp_virtual = p.layout.pp_virtual;
  s.seq_len = c.train.seq_len, s.pp_balance = p.layout.pp_balance;
  return s;
}

void RunConfig::check_processes(int processes) const {
  const int servers = parallel.servers();
  const int workers = parallel.layout.dp * parallel.layout.tp * parallel.layout.pp;
  const std::string layout = parallel.layout.tp * parallel.layout.pp == 1
                                 ? "--dp " + std::to_string(parallel.layout.dp)
                                 : "--dp " + std::to_string(parallel.layout.dp) + " × --tp " +
                                       std::to_string(parallel.layout.tp) + " × --pp " +
                                       std::to_string(parallel.layout.pp);
  if (workers + servers != processes)
    throw Error(layout + (servers ? " workers and " + std::to_string(servers) + " server(s)" : "") +
                " need " + std::to_string(workers + servers) + " processes but " +
                std::to_string(processes) + " started (launch with mpirun -np " +
                std::to_string(workers + servers) + ")");
}

void RunConfig::validate(ConfigUse use) const {
  model.validate();
  if (use == ConfigUse::model) return;
  optim.validate();
  if (train.batch_size < 1) throw Error("train.batch_size must be at least 1");
  if (train.seq_len < 1) throw Error("train.seq_len must be at least 1");
  if (train.seq_len > model.max_seq_len)
    throw Error("train.seq_len " + std::to_string(train.seq_len) + " exceeds model.max_seq_len " +
                std::to_string(model.max_seq_len));
  if (train.steps < 0) throw Error("train.steps must be non-negative");
  if (train.threads < 0) throw Error("train.threads must be non-negative (0 = all cores)");
  if (train.log_every < 1) throw Error("train.log_every must be at least 1");
  if (train.micro_batches < 1) throw Error("train.micro_batches must be at least 1");
  if (train.val_every < 0 || train.ckpt_every < 0 || train.val_batches < 0)
    throw Error("train.val_every, train.val_batches and train.ckpt_every must be non-negative");
  if (train.ckpt_per_rank && train.ckpt_async)
    throw Error(
        "train.ckpt_per_rank writes every rank's pieces at once, not on a thread: choose one of "
        "train.ckpt_per_rank and train.ckpt_async");
  if (!(train.grad_clip >= 0.0f)) throw Error("train.grad_clip must be non-negative (0 = off)");
  if (optim.warmup_steps < 0) throw Error("optim.warmup_steps must be non-negative");
  if (!(optim.min_lr >= 0.0f && optim.min_lr <= optim.lr))
    throw Error("optim.min_lr must lie between 0 and optim.lr");
  if (parallel.layout.dp < 1) throw Error("parallel.dp must be at least 1");
  const auto& p = parallel;
  if (p.layout.tp < 1 || p.layout.pp < 1)
    throw Error("parallel.tp and parallel.pp must be at least 1");
  mesh_shard(model, mesh_shape(*this), {});  // the layout must divide the model
  if (p.layout.pp_virtual > 1 && p.layout.pp_schedule != PipeSchedule::Interleaved)
    throw Error("parallel.pp_virtual " + std::to_string(p.layout.pp_virtual) +
                " model chunks per rank need parallel.pp_schedule = \"interleaved\"");
  if (p.layout.pp > 1 && p.layout.pp_schedule == PipeSchedule::Interleaved &&
      train.micro_batches % p.layout.pp)
    throw Error("the interleaved schedule needs train.micro_batches (" +
                std::to_string(train.micro_batches) + ") to be a multiple of --pp " +
                std::to_string(p.layout.pp));
  const std::string sync = sync_name(p.strategy.sync);
  const bool allreduce = p.strategy.sync == Sync::allreduce;
  if (!allreduce && (p.layout.tp > 1 || p.layout.pp > 1))
    throw Error("--sync " + sync + " replicates whole models; with --tp or --pp above 1 use " +
                "--sync allreduce");
  if (p.grads.zero < 0 || p.grads.zero > 2) throw Error("--zero must be 0, 1 or 2");
  if (p.grads.zero > 0 && !allreduce)
    throw Error("--zero " + std::to_string(p.grads.zero) + " shards the optimizer over the " +
                "data-parallel group of --sync allreduce, not --sync " + sync);
  if (train.precision == Precision::fp16) {
    if (!allreduce)
      throw Error(
          "--precision fp16 scales the loss for --sync allreduce (with or without --zero), "
          "not --sync " +
          sync + "; use bf16, which needs no loss scaling");
    int exp = 0;
    if (!(train.loss_scale >= 1.0 && train.loss_scale <= 1e30) ||
        std::frexp(train.loss_scale, &exp) != 0.5)
      throw Error(
          "train.loss_scale must be a power of two between 1 and 1e30 (scaling by it, "
          "and back, is then exact)");
    if (train.loss_scale_window < 1) throw Error("train.loss_scale_window must be at least 1");
  }
  if (p.strategy.ps_servers < 1) throw Error("ps.servers must be at least 1");
  if (p.strategy.ps_max_staleness < 0) throw Error("ps.max-staleness must be non-negative");
  if (p.strategy.local_period < 1 || p.strategy.diloco_inner_steps < 1)
    throw Error("local.period and diloco.inner-steps must be at least 1");
  if (!(p.strategy.diloco_outer_lr > 0) ||
      !(p.strategy.diloco_outer_momentum >= 0 && p.strategy.diloco_outer_momentum < 1))
    throw Error("diloco.outer-lr must be positive and diloco.outer-momentum in [0, 1)");
  if (!(parallel.grads.bucket_mb > 0)) throw Error("parallel.bucket_mb must be positive");
  if (p.grads.compress != Compress::none && !allreduce)
    throw Error(std::string("parallel.compress = \"") + compress_name(p.grads.compress) +
                "\" is for --sync allreduce (with or without --zero), not --sync " + sync +
                (p.strategy.sync == Sync::diloco ? " (its outer gradient: diloco.compress)" : ""));
  if (p.strategy.diloco_compress != OuterCompress::none && p.strategy.sync != Sync::diloco)
    throw Error(std::string("diloco.compress = \"") +
                outer_compress_name(p.strategy.diloco_compress) +
                "\" is for --sync diloco, not --sync " + sync);
  if (p.grads.compress_after < 0) throw Error("parallel.compress_after must be non-negative");
  if (p.grads.powersgd_rank < 1 || p.grads.powersgd_rank > 256)
    throw Error("parallel.powersgd_rank must be between 1 and 256");
  if (p.balance.every < 1) throw Error("parallel.balance_every must be at least 1");
  if (!(p.balance.cap >= 1 && p.balance.cap <= 64))
    throw Error("parallel.balance_cap must be between 1 and 64 (times the equal share)");
  if (p.balance.mode == Balance::dynamic && (!allreduce || p.layout.tp > 1 || p.layout.pp > 1))
    throw Error(
        "parallel.balance = \"dynamic\" shares the batch among data-parallel replicas of "
        "whole models under --sync allreduce (--tp 1 --pp 1), not --sync " +
        sync + " --tp " + std::to_string(p.layout.tp) + " --pp " + std::to_string(p.layout.pp));
  if (p.watch.link_probe_every < 0 || p.watch.link_probe_every > 1000000000)
    throw Error("parallel.link_probe_every must be between 0 (off) and 1e9 steps");
  if (!(parallel.watch.timeout_s > 0 && parallel.watch.timeout_s <= 1e6))
    throw Error("parallel.timeout_s must be positive and at most 1e6 seconds (11.6 days)");
  if (bench.steps < 1 || bench.warmup < 0)
    throw Error("bench.steps must be ≥ 1 and bench.warmup ≥ 0");
}

}  // namespace parallama
