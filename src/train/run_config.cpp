#include "train/run_config.h"

#include <toml++/toml.h>

#include <limits>
#include <set>

#include "tensor/error.h"

namespace parallama {

namespace {

class Reader {
 public:
  Reader(toml::table& root, std::string source) : root_(root), source_(std::move(source)) {}

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
          (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
        fail(full, "is out of range");
      out = static_cast<T>(v);
    } else if constexpr (std::is_floating_point_v<T>) {
      if (n->is_integer()) out = static_cast<T>(n->as_integer()->get());
      else if (n->is_floating_point()) out = static_cast<T>(n->as_floating_point()->get());
      else fail(full, "must be a number");
    } else {
      if (!n->is_string()) fail(full, "must be a string");
      out = n->as_string()->get();
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
  std::set<std::string> seen_;
};

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

RunConfig load_run_config(const std::string& path, const Overrides& overrides) {
  toml::table root;
  const std::string source = path.empty() ? "command line" : path;
  if (!path.empty()) {
    try {
      root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      const auto& b = e.source().begin;
      throw Error(path + ":" + std::to_string(b.line) + ":" + std::to_string(b.column) + ": " +
                  std::string(e.description()));
    }
  }
  for (const auto& [key, value] : overrides) {
    const size_t dot = key.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == key.size() ||
        key.find('.', dot + 1) != std::string::npos)
      throw Error("setting '--" + key + "' must look like --section.key");
    const std::string sec = key.substr(0, dot), k = key.substr(dot + 1);
    if (!root.contains(sec)) root.insert(sec, toml::table{});
    toml::table* t = root[sec].as_table();
    if (!t) throw Error("setting '--" + key + "': '" + sec + "' is not a section");
    // A value that parses as TOML keeps its type (3e-4 → float, 8 → integer, true → bool);
    // anything else is a string, so paths need no quoting.
    toml::table parsed;
    try {
      parsed = toml::parse("v = " + value);
    } catch (const toml::parse_error&) {
      parsed = toml::table{};
      parsed.insert("v", value);
    }
    t->insert_or_assign(k, *parsed.get("v"));
  }

  RunConfig c;
  Reader r(root, source);
  std::string preset = "tiny";
  r.get("model", "preset", preset);
  c.model = llama_preset(preset);
  LlamaConfig& m = c.model;
  r.get("model", "dim", m.dim);
  r.get("model", "n_layers", m.n_layers);
  r.get("model", "n_heads", m.n_heads);
  r.get("model", "n_kv_heads", m.n_kv_heads);
  r.get("model", "ffn_dim", m.ffn_dim);
  r.get("model", "vocab_size", m.vocab_size);
  r.get("model", "max_seq_len", m.max_seq_len);
  r.get("model", "norm_eps", m.norm_eps);
  r.get("model", "rope_theta", m.rope_theta);
  r.get("model", "tie_embeddings", m.tie_embeddings);
  TrainConfig& t = c.train;
  r.get("train", "batch_size", t.batch_size);
  r.get("train", "seq_len", t.seq_len);
  r.get("train", "steps", t.steps);
  r.get("train", "seed", t.seed);
  r.get("train", "threads", t.threads);
  r.get("train", "log_every", t.log_every);
  r.get("train", "out_dir", t.out_dir);
  OptimConfig& o = c.optim;
  r.get("optim", "name", o.name);
  r.get("optim", "lr", o.lr);
  r.get("optim", "beta1", o.beta1);
  r.get("optim", "beta2", o.beta2);
  r.get("optim", "eps", o.eps);
  r.get("optim", "weight_decay", o.weight_decay);
  r.get("optim", "momentum", o.momentum);
  r.get("optim", "dampening", o.dampening);
  r.get("optim", "nesterov", o.nesterov);
  r.get("data", "text", c.data.text);
  r.get("bench", "steps", c.bench.steps);
  r.get("bench", "warmup", c.bench.warmup);
  r.check_unknown();
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
  return c;
}

void RunConfig::validate() const {
  model.validate();
  optim.validate();
  if (train.batch_size < 1) throw Error("train.batch_size must be at least 1");
  if (train.seq_len < 1) throw Error("train.seq_len must be at least 1");
  if (train.seq_len > model.max_seq_len)
    throw Error("train.seq_len " + std::to_string(train.seq_len) + " exceeds model.max_seq_len " +
                std::to_string(model.max_seq_len));
  if (train.steps < 0) throw Error("train.steps must be non-negative");
  if (train.threads < 0) throw Error("train.threads must be non-negative (0 = all cores)");
  if (train.log_every < 1) throw Error("train.log_every must be at least 1");
  if (bench.steps < 1 || bench.warmup < 0) throw Error("bench.steps must be ≥ 1 and bench.warmup ≥ 0");
}

}  // namespace parallama
