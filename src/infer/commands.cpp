// `parallama generate` and `parallama eval`: load a checkpoint directory and use the model.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "infer/commands.h"
#include "infer/prompts.h"
#include "infer/share.h"
#include "io/checkpoint.h"
#include "io/json_depth.h"
#include "io/paths.h"
#include "model/llama.h"
#include "parallel/mesh.h"
#include "tensor/error.h"
#include "train/step.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace parallama {

namespace {

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
  // One with more batches than another is waited for while it answers as busy.
  comm::Options o = m.mesh.dp.options();
  o.wait_for_busy = true;
  m.mesh.dp.set_options(o);
  const EvalResult r =
      evaluate(model, m.params, tokens, max_batches * m.cfg.train.batch_size, m.mesh.dp);
  std::printf("loss %.6f perplexity %.4f over %lld tokens\n", r.loss, std::exp(r.loss),
              static_cast<long long>(r.tokens));
  if (world.size() > 1) {  // each rank's share
    const int64_t mine[2] = {r.local_batches, r.local_tokens};
    std::vector<int64_t> all(2 * world.size());
    world.all_gather(mine, all.data(), std::vector<int64_t>(world.size(), 2), DType::I64);
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

namespace {
// <s> and the prompt's ids. A prompt that cannot fit the context (with room for one more token)
// is refused, before it is encoded when its bytes alone show it (a long line would otherwise be
// encoded whole, and its cache would not fit in memory). `where` names it in messages.
std::vector<int32_t> prompt_ids(const Tokenizer& tok, const std::string& prompt, int64_t context,
                                const std::string& where) {
  if (tok.min_tokens(prompt.size()) + 1 >= context)
    throw Error(where + " has " + std::to_string(prompt.size()) + " bytes: at least " +
                std::to_string(tok.min_tokens(prompt.size())) +
                " tokens, and the model's context is " + std::to_string(context) +
                " tokens (with <s> and room for one more)");
  std::vector<int32_t> ids = {tok.bos_id()};
  const auto t = tok.encode(prompt);
  ids.insert(ids.end(), t.begin(), t.end());
  if (static_cast<int64_t>(ids.size()) >= context)
    throw Error(where + " has " + std::to_string(ids.size()) +
                " tokens (with <s>); the model's context is " + std::to_string(context) +
                ", and generation needs room for one more");
  return ids;
}
}  // namespace

int run_generate(const std::string& ckpt, const std::string& prompt, const SampleConfig& sample,
                 comm::Group world, int tp, bool print_ids) {
  if (world.size() != tp)
    throw Error("generate runs one prompt on --tp ranks: start it with mpirun -np " +
                std::to_string(tp) + " (or without mpirun for one process)");
  Loaded m(ckpt, world, tp);
  const Tokenizer tok(checkpoint_tokenizer(ckpt));
  const int64_t context = m.cfg.model.max_seq_len;
  const std::vector<int32_t> ids = prompt_ids(tok, prompt, context, "--prompt");
  SampleConfig sc = sample;
  sc.vocab = tok.vocab_size();  // a padded vocabulary's extra rows are never sampled
  // The KV cache holds what this prompt and its continuation need, not the model's whole context.
  Generator gen(m.layout, m.params, m.mesh.tp, static_cast<int64_t>(ids.size()) + sc.max_tokens);
  const auto out = gen.generate(ids, sc, tok.eos_id());
  std::printf("%s%s\n", prompt.c_str(), tok.decode(out).c_str());
  if (print_ids) std::printf("%s\n", nlohmann::json(out).dump().c_str());
  return 0;
}

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Progress of this rank's share, on rank 0's stderr, at most once a second and at the end.
struct Progress {
  int64_t total = 0, mine = 0, done = 0, tokens = 0;
  double cost = 0, cost_done = 0, t0 = now(), last = 0;
  int ranks = 1;
  void batch_done(int64_t prompts, int64_t new_tokens, double batch_cost, bool show) {
    done += prompts, tokens += new_tokens, cost_done += batch_cost;
    const double t = now(), el = t - t0;
    if (!show || (t - last < 1.0 && done < mine)) return;
    last = t;
    const double eta = cost_done > 0 ? el * (cost - cost_done) / cost_done : 0;
    if (ranks == 1)
      std::fprintf(stderr, "generate: %lld/%lld prompts, %.0f tokens/s, ETA %.0f s\n",
                   static_cast<long long>(done), static_cast<long long>(total),
                   el > 0 ? tokens / el : 0.0, eta);
    else
      std::fprintf(stderr,
                   "generate: %lld/%lld prompts of rank 0 (%lld on %d ranks), %.0f tokens/s, "
                   "ETA %.0f s\n",
                   static_cast<long long>(done), static_cast<long long>(mine),
                   static_cast<long long>(total), ranks, el > 0 ? tokens / el : 0.0, eta);
  }
};

}  // namespace

int run_generate_many(const std::string& ckpt, const std::string& prompts_file,
                      const std::string& out_file, const SampleConfig& sc, int64_t batch,
                      comm::Group world, int tp, bool force) {
  if (out_file.empty()) throw Error("--prompts needs --out FILE for the results (JSON Lines)");
  if (batch < 1) throw Error("--batch must be at least 1");
  check_output_file("--out", out_file, {ckpt, prompts_file}, force);
  const std::vector<Prompt> prompts = read_prompts(prompts_file);
  Loaded m(ckpt, world, tp);
  const Tokenizer tok(checkpoint_tokenizer(ckpt));
  const int64_t n = static_cast<int64_t>(prompts.size()), context = m.cfg.model.max_seq_len;
  std::vector<std::vector<int32_t>> ids(static_cast<size_t>(n));
  std::vector<int64_t> lengths(static_cast<size_t>(n));
  int64_t longest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Prompt& p = prompts[static_cast<size_t>(i)];
    auto& v = ids[static_cast<size_t>(i)];
    v = prompt_ids(tok, p.text, context,
                   prompts_file + ":" + std::to_string(p.line) + ": prompt " + p.id.dump());
    lengths[static_cast<size_t>(i)] = static_cast<int64_t>(v.size());
    longest = std::max(longest, static_cast<int64_t>(v.size()));
  }
  // Batches of similar prompts, shared over the replicas by estimated cost: prompt tokens plus
  // tokens to generate. The tensor-parallel ranks of a replica run the same batches.
  const auto batches = plan_batches(lengths, batch);
  std::vector<double> cost(batches.size(), 0.0);
  for (size_t b = 0; b < batches.size(); ++b)
    for (int64_t i : batches[b]) cost[b] += static_cast<double>(lengths[i] + sc.max_tokens);
  comm::Group dp = m.mesh.dp;
  const std::vector<int> owner = share_by_cost(cost, dp.size());
  std::vector<double> load(static_cast<size_t>(dp.size()), 0.0);
  for (size_t b = 0; b < batches.size(); ++b) load[owner[b]] += cost[b];
  Progress prog;
  prog.total = n, prog.ranks = dp.size(), prog.cost = load[dp.rank()];
  for (size_t b = 0; b < batches.size(); ++b)
    if (owner[b] == dp.rank()) prog.mine += static_cast<int64_t>(batches[b].size());
  const bool show = world.rank() == 0;
  // The cache holds what the longest prompt and its continuation need.
  Generator gen(m.layout, m.params, m.mesh.tp, longest + sc.max_tokens,
                std::min<int64_t>(batch, n));
  std::vector<std::pair<int64_t, std::string>> mine;
  int64_t my_tokens = 0;
  for (size_t b = 0; b < batches.size(); ++b) {
    if (owner[b] != dp.rank()) continue;
    std::vector<std::vector<int32_t>> in;
    std::vector<SampleConfig> sample;
    for (int64_t i : batches[b]) {
      in.push_back(ids[static_cast<size_t>(i)]);
      SampleConfig c = sc;         // the prompt's own seed, else --seed plus its index in the file
      c.vocab = tok.vocab_size();  // a padded vocabulary's extra rows are never sampled
      c.seed = prompts[static_cast<size_t>(i)].seed.value_or(sc.seed + static_cast<uint64_t>(i));
      sample.push_back(c);
    }
    const std::vector<Generated> got = gen.generate_batch(in, sample, tok.eos_id());
    int64_t new_tokens = 0;
    for (size_t k = 0; k < got.size(); ++k) {
      const int64_t i = batches[b][k];
      const Prompt& p = prompts[static_cast<size_t>(i)];
      const nlohmann::json j = {{"id", p.id},
                                {"prompt", p.text},
                                {"completion", tok.decode(got[k].tokens)},
                                {"prompt_tokens", lengths[static_cast<size_t>(i)]},
                                {"completion_tokens", got[k].tokens.size()},
                                {"seconds", std::round(got[k].seconds * 1e4) / 1e4}};
      mine.emplace_back(i, j.dump());
      new_tokens += static_cast<int64_t>(got[k].tokens.size());
    }
    my_tokens += new_tokens;
    prog.batch_done(static_cast<int64_t>(got.size()), new_tokens, cost[b], show);
  }
  const double busy = now() - prog.t0;
  // The slowest replica may still be at work: wait for it while it answers as busy.
  comm::Options o = dp.options();
  o.wait_for_busy = true;
  dp.set_options(o);
  const std::vector<std::string> lines = gather_in_order(dp, mine, n);
  // Each replica's share and busy time, so that imbalance shows.
  const double stats[4] = {static_cast<double>(mine.size()), static_cast<double>(my_tokens), busy,
                           load[dp.rank()]};
  std::vector<double> all(4 * static_cast<size_t>(dp.size()));
  dp.all_gather(stats, all.data(), std::vector<int64_t>(static_cast<size_t>(dp.size()), 4),
                DType::F64);
  write_lines_from_rank0(world, lines, out_file);  // world rank 0 is rank 0 of its replica group
  if (world.rank() != 0) return 0;
  double tokens = 0, most = 0, sum = 0, total_cost = 0;
  for (int r = 0; r < dp.size(); ++r)
    tokens += all[4 * r + 1], most = std::max(most, all[4 * r + 2]), sum += all[4 * r + 2],
                              total_cost += all[4 * r + 3];
  std::printf("wrote %s: %lld prompts, %.0f tokens in %.2f s (%.0f tokens/s)\n", out_file.c_str(),
              static_cast<long long>(n), tokens, most, most > 0 ? tokens / most : 0.0);
  if (dp.size() > 1) {
    for (int r = 0; r < dp.size(); ++r)
      std::printf("rank %d: %.0f prompts, %.0f tokens, busy %.2f s, %.0f%% of the estimated cost\n",
                  r * tp, all[4 * r], all[4 * r + 1], all[4 * r + 2],
                  total_cost > 0 ? 100 * all[4 * r + 3] / total_cost : 0.0);
    std::printf("busiest rank %.2f s, mean %.2f s (%.2fx)\n", most, sum / dp.size(),
                sum > 0 ? most * dp.size() / sum : 1.0);
  }
  return 0;
}

int run_tokenize(const std::string& ckpt, const std::string& tokenizer, const std::string& text,
                 bool json) {
  if (ckpt.empty() == tokenizer.empty())
    throw Error("tokenize needs --ckpt DIR or --tokenizer FILE");
  std::vector<std::string> texts;
  if (json) {
    std::ifstream in = open_input(text, "--text", kMaxTextBytes);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
      texts = parse_json_bounded(bytes, 4).get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(text + ": not a JSON array of strings (" + e.what() + ")");
    }
  } else {
    texts = read_text_lines(text);
  }
  const Tokenizer tok(ckpt.empty() ? tokenizer : checkpoint_tokenizer(ckpt));
  nlohmann::json lines = nlohmann::json::array();
  size_t bytes = 0, tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& t : texts) {
    std::vector<int32_t> ids = tok.encode(t);
    bytes += t.size();
    tokens += ids.size();
    lines.push_back(std::move(ids));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const nlohmann::json j = {{"bos", tok.bos_id()}, {"eos", tok.eos_id()}, {"lines", lines}};
  std::printf("%s\n", j.dump().c_str());
  std::fprintf(stderr, "tokenized %zu texts, %zu bytes, into %zu tokens in %.3f s (%.2f MB/s)\n",
               texts.size(), bytes, tokens, s, s > 0 ? bytes / s / 1e6 : 0.0);
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
  if (tj["tokenizer_hash"].get<uint64_t>() != shard.header.tokenizer_hash)
    throw Error(data + ": made with another tokenizer than the checkpoint's");
  return eval_tokens(m, shard.tokens, data, max_batches, world);
}

}  // namespace parallama
