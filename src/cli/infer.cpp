// `parallama generate` and `parallama eval`: load a checkpoint directory and use the model.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "model/llama.h"
#include "tensor/error.h"
#include "train/step.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace parallama {

namespace {

struct Loaded {
  RunConfig cfg;
  ParamLayout layout;
  ParamBuffer params;
  explicit Loaded(const std::string& ckpt)
      : cfg(config_from_json(read_trainer_json(ckpt).at("config"), ckpt + "/trainer.json")),
        layout(cfg.model, ModelShard::whole(cfg.model)),
        params(layout) {
    configure_threads(cfg.train.threads);
    load_checkpoint_model(ckpt, params);
  }
};

}  // namespace

int run_generate(const std::string& ckpt, const std::string& prompt, const SampleConfig& sc) {
  Loaded m(ckpt);
  const Tokenizer tok((fs::path(ckpt) / "tokenizer.model").string());
  std::vector<int32_t> ids = {tok.bos_id()};
  const auto p = tok.encode(prompt);
  ids.insert(ids.end(), p.begin(), p.end());
  Generator gen(m.layout, m.params);
  const auto out = gen.generate(ids, sc, tok.eos_id());
  std::printf("%s%s\n", prompt.c_str(), tok.decode(out).c_str());
  return 0;
}

int run_eval(const std::string& ckpt, const std::string& data, int64_t max_batches) {
  Loaded m(ckpt);
  const TokenShard shard = read_shard(data);
  if (shard.header.vocab_size > static_cast<uint64_t>(m.cfg.model.vocab_size))
    throw Error(data + ": vocabulary " + std::to_string(shard.header.vocab_size) +
                " is larger than the model's " + std::to_string(m.cfg.model.vocab_size));
  const nlohmann::json tj = read_trainer_json(ckpt);
  if (tj.contains("tokenizer_hash") &&
      tj["tokenizer_hash"].get<uint64_t>() != shard.header.tokenizer_hash)
    throw Error(data + ": made with another tokenizer than the checkpoint's");
  const int64_t T = m.cfg.train.seq_len;
  if (static_cast<int64_t>(shard.tokens.size()) <= T)
    throw Error(data + ": fewer than " + std::to_string(T + 1) + " tokens");
  Llama model(m.layout, m.cfg.train.batch_size, T);
  comm::Group one;
  const EvalResult r =
      evaluate(model, m.params, shard.tokens, max_batches * m.cfg.train.batch_size, one);
  std::printf("loss %.4f perplexity %.3f over %lld tokens\n", r.loss, std::exp(r.loss),
              static_cast<long long>(r.tokens));
  return 0;
}

}  // namespace parallama
