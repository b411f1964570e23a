// Writes what the PyTorch reference needs to check our model: the initial weights of the tiny
// preset, a token batch (with ignored targets), and our logits, loss, every parameter gradient,
// and the parameters after 3 AdamW steps on that batch.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/param_io.h"
#include "io/safetensors.h"
#include "kernels/cross_entropy.h"
#include "model/llama.h"
#include "optim/optimizer.h"

using namespace parallama;

int main(int argc, char** argv) {
  bool tied = false, usage = argc < 2;
  Precision precision = Precision::fp32;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "tied")
      tied = true;  // the output head shares the embedding (as Llama 3.2)
    else if (a == "bf16" || a == "fp16")
      precision = parse_precision(a);  // mixed precision: 16-bit GEMM operands
    else
      usage = true;
  }
  if (usage) {
    std::fprintf(stderr, "usage: dump_llama OUT_DIR [tied] [bf16|fp16]\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::filesystem::create_directories(dir);
  LlamaConfig cfg = llama_preset("tiny");
  cfg.tie_embeddings = tied;
  const int64_t B = 3, T = 11, V = cfg.vocab_size;  // odd sizes on purpose
  ParamLayout layout(cfg, ModelShard::whole(cfg));
  ParamBuffer params(layout), grads(layout);
  init_params(params, 42);
  io::save_params(params, dir + "/model.safetensors");

  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (auto& x : tokens) x = tok(rng);
  for (int64_t i = 0; i < B * T; ++i) targets[i] = (i % 5 == 3) ? kernels::kIgnoreIndex : tok(rng);

  OptimConfig oc;
  oc.name = OptimKind::adamw, oc.lr = 1e-3f, oc.beta1 = 0.9f, oc.beta2 = 0.95f, oc.eps = 1e-8f;
  oc.weight_decay = 0.1f;
  nlohmann::json j;
  j["config"] = {{"dim", cfg.dim},
                 {"n_layers", cfg.n_layers},
                 {"n_heads", cfg.n_heads},
                 {"n_kv_heads", cfg.n_kv_heads},
                 {"ffn_dim", cfg.ffn_dim},
                 {"vocab_size", cfg.vocab_size},
                 {"norm_eps", cfg.norm_eps},
                 {"rope_theta", cfg.rope_theta},
                 {"tie_embeddings", cfg.tie_embeddings}};
  j["precision"] = precision_name(precision);
  for (int64_t b = 0; b < B; ++b) {
    j["tokens"].push_back(
        std::vector<int32_t>(tokens.begin() + b * T, tokens.begin() + (b + 1) * T));
    j["targets"].push_back(
        std::vector<int32_t>(targets.begin() + b * T, targets.begin() + (b + 1) * T));
  }
  j["adamw"] = {{"lr", oc.lr},
                {"beta1", oc.beta1},
                {"beta2", oc.beta2},
                {"eps", oc.eps},
                {"weight_decay", oc.weight_decay},
                {"steps", 3}};
  std::ofstream(dir + "/batch.json") << j.dump(1) << "\n";

  Llama model(layout, B, T, {}, Recompute::none, precision);
  // The logits from a forward-only pass; the gradient from a training pass, whose forward
  // leaves the loss's exponentials for backward in place of the logits.
  const float loss = model.forward(params, tokens.data(), targets.data());
  std::vector<float> logits(model.logits(), model.logits() + B * T * V);
  model.forward(params, tokens.data(), targets.data(), true);
  model.backward(params, grads, 1.0f / static_cast<float>(model.valid_targets()));

  ParamBuffer grads0(layout);
  std::copy(grads.data(), grads.data() + grads.size(), grads0.data());
  Optimizer opt(layout, oc);
  for (int step = 0; step < 3; ++step) {
    grads.zero();
    model.forward(params, tokens.data(), targets.data(), true);
    model.backward(params, grads, 1.0f / static_cast<float>(model.valid_targets()));
    opt.step(params, grads, oc.lr);
  }

  io::SafeTensorsWriter w;
  w.add("logits", logits.data(), {B, T, V});
  w.add("loss", &loss, {1});
  io::add_params(w, grads0, "grad.");
  io::add_params(w, params, "step3.");
  w.write(dir + "/ours.safetensors");
  std::printf("loss %.6f over %lld targets; wrote %s\n", loss,
              static_cast<long long>(model.valid_targets()), dir.c_str());
  return 0;
}
