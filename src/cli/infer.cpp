// `parallama generate` and `parallama eval`: load a checkpoint directory and use the model.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "model/llama.h"
#include "parallel/mesh.h"
#include "tensor/error.h"
#include "train/step.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace parallama {

namespace {

// The checkpoint's tokenizer, checked against the hash its trainer.json records.
std::string checkpoint_tokenizer(const std::string& ckpt) {
  const nlohmann::json tj = read_trainer_json(ckpt);
  const std::string path = (fs::path(ckpt) / "tokenizer.model").string();
  if (tj.contains("tokenizer_hash"))
    check_tokenizer_hash(path, tj["tokenizer_hash"].get<uint64_t>(), ckpt);
  return path;
}

MeshShape layout_of(const comm::Group& world, int tp) {
  if (tp < 1 || world.size() % tp)
    throw Error("--tp " + std::to_string(tp) + " must divide the " + std::to_string(world.size()) +
                " processes started");
  MeshShape s;
  s.dp = world.size() / tp, s.tp = tp;
  return s;
}

// The checkpoint's model on the mesh of the processes: each tensor-parallel rank loads its slice.
struct Loaded {
  RunConfig cfg;
  Mesh mesh;
  ParamLayout layout;
  ParamBuffer params;
  Loaded(const std::string& ckpt, const comm::Group& world, int tp)
      : cfg(checkpoint_config(read_trainer_json(ckpt), ckpt + "/trainer.json")),
        mesh(world, layout_of(world, tp), cfg.model),
        layout(cfg.model, mesh.shard()),
        params(layout) {
    configure_threads(cfg.train.threads);
    load_checkpoint_model(ckpt, params, mesh.tp, mesh.pp);
  }
};

// The loss of the checkpoint on `tokens` (from `source`), in windows of seq_len + 1 tokens that
// start every seq_len tokens, as validation cuts a shard.
int eval_tokens(Loaded& m, const std::vector<int32_t>& tokens, const std::string& source,
                int64_t max_batches, comm::Group& world) {
  const int64_t T = m.cfg.train.seq_len;
  if (static_cast<int64_t>(tokens.size()) <= T)
    throw Error(source + ": fewer than " + std::to_string(T + 1) + " tokens");
  Llama model(m.layout, m.cfg.train.batch_size, T, m.mesh.tp);
  // The replicas share the batches; the tensor-parallel ranks of a replica work on the same ones.
  const EvalResult r =
      evaluate(model, m.params, tokens, max_batches * m.cfg.train.batch_size, m.mesh.dp);
  std::printf("loss %.6f perplexity %.4f over %lld tokens\n", r.loss, std::exp(r.loss),
              static_cast<long long>(r.tokens));
  if (world.size() > 1) {  // each rank's share
    const int64_t mine[2] = {r.local_batches, r.local_tokens};
    std::vector<int64_t> all(2 * world.size());
    world.all_gather(mine, all.data(), std::vector<int64_t>(world.size(), 2), comm::DataType::I64);
    for (int k = 0; k < world.size(); ++k)
      std::printf("rank %d: %lld batches, %lld tokens\n", k, static_cast<long long>(all[2 * k]),
                  static_cast<long long>(all[2 * k + 1]));
  }
  return 0;
}

// A text file tokenized as prepare does: each non-blank line is <s> and the line's tokens.
std::vector<int32_t> text_tokens(const std::string& ckpt, const std::string& text) {
  const Tokenizer tok(checkpoint_tokenizer(ckpt));
  std::vector<int32_t> ids;
  for (const std::string& line : read_text_lines(text)) {
    ids.push_back(tok.bos_id());
    const auto t = tok.encode(line);
    ids.insert(ids.end(), t.begin(), t.end());
  }
  return ids;
}

}  // namespace

int run_generate(const std::string& ckpt, const std::string& prompt, const SampleConfig& sc,
                 comm::Group world, int tp, bool print_ids) {
  if (world.size() != tp)
    throw Error("generate runs one prompt on --tp ranks: start it with mpirun -np " +
                std::to_string(tp) + " (or without mpirun for one process)");
  Loaded m(ckpt, world, tp);
  const Tokenizer tok(checkpoint_tokenizer(ckpt));
  std::vector<int32_t> ids = {tok.bos_id()};
  const auto p = tok.encode(prompt);
  ids.insert(ids.end(), p.begin(), p.end());
  // The KV cache holds what this prompt and its continuation need, not the model's whole context.
  Generator gen(m.layout, m.params, m.mesh.tp, static_cast<int64_t>(ids.size()) + sc.max_tokens);
  const auto out = gen.generate(ids, sc, tok.eos_id());
  std::printf("%s%s\n", prompt.c_str(), tok.decode(out).c_str());
  if (print_ids) std::printf("%s\n", nlohmann::json(out).dump().c_str());
  return 0;
}

int run_tokenize(const std::string& ckpt, const std::string& text) {
  const Tokenizer tok(checkpoint_tokenizer(ckpt));
  nlohmann::json lines = nlohmann::json::array();
  for (const std::string& line : read_text_lines(text)) lines.push_back(tok.encode(line));
  const nlohmann::json j = {{"bos", tok.bos_id()}, {"eos", tok.eos_id()}, {"lines", lines}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

int run_eval(const std::string& ckpt, const std::string& data, const std::string& text,
             int64_t max_batches, comm::Group world, int tp) {
  Loaded m(ckpt, world, tp);
  if (!text.empty()) return eval_tokens(m, text_tokens(ckpt, text), text, max_batches, world);
  const TokenShard shard = read_shard(data);
  if (shard.header.vocab_size > static_cast<uint64_t>(m.cfg.model.vocab_size))
    throw Error(data + ": vocabulary " + std::to_string(shard.header.vocab_size) +
                " is larger than the model's " + std::to_string(m.cfg.model.vocab_size));
  const nlohmann::json tj = read_trainer_json(ckpt);
  if (tj.contains("tokenizer_hash") &&
      tj["tokenizer_hash"].get<uint64_t>() != shard.header.tokenizer_hash)
    throw Error(data + ": made with another tokenizer than the checkpoint's");
  return eval_tokens(m, shard.tokens, data, max_batches, world);
}

}  // namespace parallama
