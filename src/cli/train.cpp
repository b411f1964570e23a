// `parallama train` (first version): trains on the bytes of a text file with random windows and
// writes the final weights. The tokenizer, loader, schedule and checkpoints come with the main job.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "cli/commands.h"
#include "tensor/error.h"
#include "train/step.h"

namespace parallama {

int run_info(const RunConfig& cfg) {
  const LlamaConfig& m = cfg.model;
  std::printf("model %s%s\n", m.name.c_str(), m.shape_only ? " (shape only)" : "");
  std::printf("  dim %d, layers %d, heads %d, kv heads %d, head dim %d, ffn %d, vocab %d, max seq %d\n",
              m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim(), m.ffn_dim, m.vocab_size,
              m.max_seq_len);
  std::printf("  rope theta %g, norm eps %g, output head %s\n", m.rope_theta, m.norm_eps,
              m.tie_embeddings ? "tied to the embedding" : "separate");
  std::printf("  parameters: %lld (%.3f B), in matmuls: %lld\n", static_cast<long long>(m.num_params()),
              m.num_params() / 1e9, static_cast<long long>(m.num_matmul_params()));
  return 0;
}

int run_train(const RunConfig& cfg) {
  if (cfg.data.text.empty()) throw Error("no training data: set data.text (a text file)");
  std::ifstream in(cfg.data.text, std::ios::binary);
  if (!in) throw Error("cannot read data.text '" + cfg.data.text + "'");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const int64_t B = cfg.train.batch_size, T = cfg.train.seq_len;
  if (static_cast<int64_t>(bytes.size()) < T + 1)
    throw Error(cfg.data.text + ": " + std::to_string(bytes.size()) + " bytes is shorter than one sequence of " +
                std::to_string(T + 1));
  if (cfg.model.vocab_size < 256)
    throw Error("byte-level training needs model.vocab_size of at least 256");
  const int threads = configure_threads(cfg.train.threads);
  TrainState st(cfg);
  std::printf("training %s (%.2fM parameters) on %s (%zu bytes), batch %lld x %lld, %d threads\n",
              cfg.model.name.c_str(), cfg.model.num_params() / 1e6, cfg.data.text.c_str(), bytes.size(),
              static_cast<long long>(B), static_cast<long long>(T), threads);
  std::mt19937_64 rng(cfg.train.seed);
  std::uniform_int_distribution<int64_t> start(0, static_cast<int64_t>(bytes.size()) - T - 1);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int64_t s = 1; s <= cfg.train.steps; ++s) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = start(rng);
      for (int64_t t = 0; t < T; ++t) {
        tokens[b * T + t] = bytes[o + t];
        targets[b * T + t] = bytes[o + t + 1];
      }
    }
    const float loss = st.step(tokens.data(), targets.data(), cfg.optim.lr);
    if (!std::isfinite(loss)) throw Error("loss became " + std::to_string(loss) + " at step " + std::to_string(s) + "; lower optim.lr");
    if (s == 1 || s % cfg.train.log_every == 0 || s == cfg.train.steps)
      std::printf("step %lld/%lld loss %.4f\n", static_cast<long long>(s),
                  static_cast<long long>(cfg.train.steps), loss), std::fflush(stdout);
  }
  std::filesystem::create_directories(cfg.train.out_dir);
  const std::string path = cfg.train.out_dir + "/model.safetensors";
  save_params(st.params, path);
  std::printf("wrote %s\n", path.c_str());
  return 0;
}

}  // namespace parallama
