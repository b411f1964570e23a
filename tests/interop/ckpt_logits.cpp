// Writes the logits a checkpoint's model gives a token batch, for tests/interop/hf_convert.py to
// hold against an independent PyTorch model: "logits" (B, T, V) from the training forward, and
// "gen_logits" (T, V) from the KV-cache generator fed row 0 token by token.
//   ckpt_logits CKPT TOKENS OUT.safetensors     (TOKENS: a text file "B T" then B·T ids)
#include <cstdio>
#include <fstream>
#include <vector>

#include "infer/generate.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "tensor/error.h"
#include "train/run_config.h"

using namespace parallama;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: ckpt_logits CKPT TOKENS OUT.safetensors\n");
    return 2;
  }
  try {
    const std::string ckpt = argv[1];
    const LlamaConfig cfg =
        checkpoint_config(read_trainer_json(ckpt), ckpt + "/trainer.json").model;
    std::ifstream in(argv[2]);
    int64_t B = 0, T = 0;
    if (!(in >> B >> T) || B < 1 || T < 1) throw Error(std::string(argv[2]) + ": no \"B T\"");
    std::vector<int32_t> tokens(B * T), targets(B * T, 0);
    for (auto& t : tokens)
      if (!(in >> t)) throw Error(std::string(argv[2]) + ": fewer than B·T ids");

    const ParamLayout layout(cfg, ModelShard::whole(cfg));
    ParamBuffer params(layout);
    comm::Group one;
    load_checkpoint_model(ckpt, params, one, one);
    Llama model(layout, B, T);
    model.forward(params, tokens.data(), targets.data());
    const int64_t V = cfg.vocab_size;
    std::vector<float> logits(model.logits(), model.logits() + B * T * V);

    Generator gen(layout, params);
    std::vector<float> gen_logits(T * V);
    for (int64_t t = 0; t < T; ++t) {
      const float* l = gen.feed(tokens[t]);
      std::copy(l, l + V, gen_logits.begin() + t * V);
    }
    io::SafeTensorsWriter w;
    w.add("logits", logits.data(), {B, T, V});
    w.add("gen_logits", gen_logits.data(), {T, V});
    w.write(argv[3]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckpt_logits: %s\n", e.what());
    return 1;
  }
  return 0;
}
