#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "kernels/cross_entropy.h"
#include "optim/schedule.h"
#include "parallel/data_parallel.h"
#include "tensor/error.h"
#include "train/metrics.h"
#include "train/step.h"

namespace fs = std::filesystem;

namespace parallama {

using Clock = std::chrono::steady_clock;

EvalResult evaluate(Llama& model, const ParamBuffer& params, const std::vector<int32_t>& tokens,
                    int64_t max_samples, comm::Group& group) {
  const int64_t B = model.batch(), T = model.seq_len();
  const int64_t n = static_cast<int64_t>(tokens.size());
  int64_t samples = n > T ? (n - 1) / T : 0;
  if (max_samples > 0) samples = std::min(samples, max_samples);
  std::vector<int32_t> in(B * T), tgt(B * T);
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t first = 0, batches = 0; first < samples; first += B, ++batches) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const bool real = first + b < samples;
        const int64_t at = (first + b) * T + t;
        in[b * T + t] = real ? tokens[at] : 0;
        tgt[b * T + t] = real ? tokens[at + 1] : kernels::kIgnoreIndex;
      }
    model.forward(params, in.data(), tgt.data());
    sum += model.loss_sum();
    count += model.valid_targets();
  }
  sum = group.sum(sum);
  count = group.sum(count);
  return {count ? sum / static_cast<double>(count) : 0.0, count};
}

void check_same_params(const ParamBuffer& params, comm::Group& group) {
  const uint64_t mine = fnv1a64(params.data(), static_cast<size_t>(params.size()) * sizeof(float));
  std::vector<uint64_t> all(group.size());
  group.all_gather(&mine, all.data(), std::vector<int64_t>(group.size(), 1), comm::DataType::U64);
  std::string differ;
  for (int r = 1; r < group.size(); ++r)
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw Error("parameters of ranks " + differ +
                " differ from rank 0's at start-up (checksum); "
                "every rank must start from the same seed or checkpoint");
}

namespace {

TokenShard load_split(const std::string& dir, const char* name, const LlamaConfig& m) {
  if (dir.empty())
    throw Error("no training data: set data.dir to a folder made by `parallama prepare`");
  TokenShard s = read_shard((fs::path(dir) / name).string());
  if (s.header.vocab_size > static_cast<uint64_t>(m.vocab_size))
    throw Error(s.path + ": made with a vocabulary of " + std::to_string(s.header.vocab_size) +
                " but model.vocab_size is " + std::to_string(m.vocab_size));
  return s;
}

}  // namespace

int train(const RunConfig& cfg, const TrainOptions& opt, comm::Group dp) {
  const TrainConfig& tc = cfg.train;
  const int64_t B = tc.batch_size, T = tc.seq_len, K = tc.micro_batches;
  const int world = dp.size(), rank = dp.rank();
  if (cfg.parallel.dp != world)
    throw Error("--dp " + std::to_string(cfg.parallel.dp) + " does not match the " +
                std::to_string(world) + " processes started (launch with mpirun -np " +
                std::to_string(cfg.parallel.dp) + ")");
  // Everything a user could get wrong is checked before the model is built.
  const TokenShard train_data = load_split(cfg.data.dir, "train.bin", cfg.model);
  const TokenShard val_data = load_split(cfg.data.dir, "val.bin", cfg.model);
  if (train_data.header.tokenizer_hash != val_data.header.tokenizer_hash)
    throw Error(cfg.data.dir + ": train.bin and val.bin were made with different tokenizers");
  DataLoader loader(train_data.tokens, T, tc.seed, rank, world);
  const int64_t global = B * K * world;
  if (global > loader.num_samples())
    throw Error("a global batch of " + std::to_string(global) +
                " sequences (batch_size × micro_batches) " + "is larger than the " +
                std::to_string(loader.num_samples()) + " sequences of " + std::to_string(T + 1) +
                " tokens in " + train_data.path);
  if (static_cast<int64_t>(val_data.tokens.size()) <= T)
    throw Error(val_data.path + ": fewer than " + std::to_string(T + 1) + " tokens for validation");
  nlohmann::json resume_json;
  if (!opt.resume.empty()) {
    resume_json = read_trainer_json(opt.resume);
    const RunConfig old = config_from_json(resume_json.at("config"), opt.resume + "/trainer.json");
    if (config_to_json(old)["model"] != config_to_json(cfg)["model"])
      throw Error(opt.resume + ": the checkpoint is of another model (" +
                  config_to_json(old)["model"].dump() + ")");
    if (resume_json.value("tokenizer_hash", uint64_t{0}) != train_data.header.tokenizer_hash)
      throw Error(opt.resume + ": the checkpoint was trained with another tokenizer than " +
                  cfg.data.dir);
  }

  const int threads = configure_threads(tc.threads);
  TrainState st(cfg);
  int64_t step = 0;
  if (!opt.resume.empty()) {
    const CheckpointState cs = load_checkpoint(opt.resume, st.params, st.optim);
    step = cs.step;
    loader.set_position(cs.data_position);
  }
  check_same_params(st.params, dp);
  GradReducer reducer(dp, st.grads, static_cast<int64_t>(cfg.parallel.bucket_mb * (1 << 20)));
  // Only rank 0 reports and writes.
  std::optional<Progress> progress;
  if (rank == 0) progress.emplace(tc.out_dir, tc.steps, step, tc.log_every);
  auto say = [&](const std::string& line) {
    if (progress) progress->message(line);
  };
  char head[256];
  std::snprintf(head, sizeof head,
                "%s %s: %.2fM parameters, %lld train tokens, %d rank(s) x %lld micro-batch(es) x "
                "%lld x %lld, %d thread(s) per rank",
                step ? "resuming" : "training", cfg.model.name.c_str(),
                cfg.model.num_params() / 1e6, static_cast<long long>(train_data.tokens.size()),
                world, static_cast<long long>(K), static_cast<long long>(B),
                static_cast<long long>(T), threads);
  say(head + (step ? " from step " + std::to_string(step) : std::string()));

  std::vector<int32_t> tokens(K * B * T), targets(K * B * T);
  auto save = [&](int64_t at, double last_loss) {
    CheckpointState cs;
    cs.step = at;
    cs.data_position = loader.position();
    cs.extra = {{"config", config_to_json(cfg)},
                {"layout", {{"dp", world}, {"tp", 1}, {"pp", 1}}},
                {"rng", {{"data_seed", tc.seed}, {"data_order", "seeded permutation per epoch"}}},
                {"epoch", loader.epoch()},
                {"loss", last_loss},
                {"tokenizer_hash", train_data.header.tokenizer_hash}};
    cs.copy_files = {(fs::path(cfg.data.dir) / "tokenizer.model").string()};
    const std::string dir = (fs::path(tc.out_dir) / ("step-" + std::to_string(at))).string();
    if (rank != 0) return;
    save_checkpoint(dir, st.params, st.optim, cs);
    std::ofstream(fs::path(tc.out_dir) / "latest") << "step-" << at << "\n";
    say("checkpoint " + dir);
  };

  const int64_t last = opt.stop_at > 0 ? std::min(opt.stop_at, tc.steps) : tc.steps;
  for (++step; step <= last; ++step) {
    const auto t0 = Clock::now();
    int64_t valid = 0;
    for (int k = 0; k < K; ++k) {
      loader.micro_batch(k, B, tokens.data() + k * B * T, targets.data() + k * B * T);
      for (int64_t i = 0; i < B * T; ++i) valid += targets[k * B * T + i] != kernels::kIgnoreIndex;
    }
    // Every rank scales by the global count of targets, so the summed gradients are those of
    // the global mean loss, whatever each rank holds.
    valid = dp.sum(valid);
    st.grads.zero();
    double loss_sum = 0.0;
    ReduceStats rs;
    for (int k = 0; k < K; ++k) {
      st.model.forward(st.params, tokens.data() + k * B * T, targets.data() + k * B * T);
      loss_sum += st.model.loss_sum();
      const float scale = 1.0f / static_cast<float>(valid);
      if (k + 1 < K) {
        st.model.backward(st.params, st.grads, scale);  // accumulate locally
      } else {
        reducer.begin();
        st.model.backward(st.params, st.grads, scale,
                          [&](int64_t off) { reducer.ready_from(off); });
        rs = reducer.finish();
      }
    }
    const double loss = dp.sum(loss_sum) / static_cast<double>(valid);
    if (!std::isfinite(loss))
      throw Error("loss became " + std::to_string(loss) + " at step " + std::to_string(step) +
                  "; lower optim.lr or set train.grad_clip");
    const double norm = grad_norm(st.grads);
    clip_grads(st.grads, norm, tc.grad_clip);
    const float lr = lr_at(step, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps, tc.steps);
    st.optim.step(st.params, st.grads, lr);
    loader.advance(global);

    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    nlohmann::json j = {{"step", step},
                        {"loss", loss},
                        {"lr", lr},
                        {"grad_norm", norm},
                        {"tokens_per_s", static_cast<double>(global * T) / dt}};
    if (world > 1) {
      j["comm_s"] = rs.comm_s;
      j["comm_exposed_s"] = rs.exposed_s;
      j["bytes_reduced"] = rs.bytes;
    }
    if ((tc.val_every > 0 && step % tc.val_every == 0) || step == tc.steps) {
      j["val_loss"] =
          evaluate(st.model, st.params, val_data.tokens, tc.val_batches * global, dp).loss;
      char line[128];
      std::snprintf(line, sizeof line, "step %lld: val_loss %.4f", static_cast<long long>(step),
                    j["val_loss"].get<double>());
      say(line);
    }
    if (progress) progress->step(j, global * T);
    if ((tc.ckpt_every > 0 && step % tc.ckpt_every == 0) || step == last) save(step, loss);
  }
  return 0;
}

}  // namespace parallama
