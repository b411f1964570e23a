#include "finetune/train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>

#include "data/loader.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "finetune/metrics.h"
#include "infer/share.h"
#include "io/checkpoint.h"
#include "io/param_io.h"
#include "io/paths.h"
#include "io/safetensors.h"
#include "kernels/optim.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "parallel/sync.h"
#include "tensor/error.h"
#include "train/step.h"

namespace fs = std::filesystem;

namespace parallama::finetune {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The classifier's inputs of a split: token rows and labels.
struct Split {
  std::vector<std::vector<int32_t>> rows;  // <s> + text, cut to T
  std::vector<std::vector<int32_t>> bags;  // the text's tokens, whole (naive Bayes)
  std::vector<int> labels;
};

Split tokenize(const Tokenizer& tok, const std::vector<Example>& xs, int64_t T) {
  Split s;
  for (const Example& e : xs) {
    s.bags.push_back(tok.encode(e.text));
    s.rows.push_back(classifier_tokens(s.bags.back(), tok.bos_id(), T));
    s.labels.push_back(e.label);
  }
  return s;
}

// The model being trained: the body and the head, one layout (classifier_layout).
struct Model {
  std::unique_ptr<ParamLayout> layout;
  std::unique_ptr<ParamBuffer> params;
};

struct RunResult {
  Confusion conf;
  double train_s = 0, eval_s = 0, last_loss = 0;
};

// Predictions for every example of `split`, each rank taking examples rank, rank + ranks, ...
Confusion evaluate(Classifier& clf, const Model& m, const Split& split, int classes,
                   comm::Group& world) {
  const int64_t n = static_cast<int64_t>(split.rows.size());
  const int R = world.size(), r = world.rank();
  std::vector<int64_t> pred(static_cast<size_t>(n), 0);
  std::vector<int64_t> mine;
  for (int64_t i = r; i < n; i += R) mine.push_back(i);
  predict(clf, *m.params, split.rows, mine,
          [&](int64_t i, const float* p) { pred[i] = std::max_element(p, p + classes) - p; });
  world.all_reduce(pred.data(), n, DType::I64);
  return Confusion(split.labels, std::vector<int>(pred.begin(), pred.end()), classes);
}

RunResult train_and_evaluate(Model& m, const RunConfig& cfg, const Split& train, const Split& test,
                             int classes, const FinetuneOptions& opt, comm::Group& world,
                             const char* name) {
  const int R = world.size(), r = world.rank();
  const int64_t B = (opt.batch + R - 1) / R, T = opt.seq_len, n = train.rows.size();
  Classifier clf(*m.layout, B, T);
  ParamBuffer grads(*m.layout);
  OptimConfig oc = cfg.optim;
  oc.name = OptimKind::adamw, oc.lr = opt.lr, oc.weight_decay = opt.weight_decay;
  Optimizer optim(*m.layout, oc);
  // The gradients are summed, clipped and applied as train's --sync allreduce does it: the same
  // bucketed reduction (overlapping backward), global norm, clip and AdamW.
  SyncConfig sc;
  sc.grad_clip = opt.clip, sc.optim = oc, sc.steps = opt.steps;
  Roles roles = make_roles(world, sc);
  // The whole model on each rank: no group shares it, no tied copies.
  Replica replica{*m.params, grads, optim, comm::Group(), true, comm::Group()};
  replica.skip_nonfinite = true;  // a non-finite gradient never reaches the weights
  const std::unique_ptr<Synchronizer> sync = make_synchronizer(sc, roles, replica);
  const int64_t warmup = std::max<int64_t>(1, opt.steps / 10);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  int64_t perm_epoch = -1;
  std::vector<int32_t> tokens(B * T), lengths(B), labels(B);
  std::vector<float> weights(B);
  RunResult res;
  const auto t0 = Clock::now();
  for (int64_t step = 1; step <= opt.steps; ++step) {
    std::fill(lengths.begin(), lengths.end(), 0);
    std::fill(weights.begin(), weights.end(), 0.0f);
    std::fill(labels.begin(), labels.end(), 0);
    for (int64_t j = r, b = 0; j < opt.batch; j += R, ++b) {
      const int64_t pos = (step - 1) * opt.batch + j, epoch = pos / n;
      if (epoch != perm_epoch) {  // the same permutation on every rank
        seeded_permutation(perm, n, opt.seed * 1000003 + static_cast<uint64_t>(epoch));
        perm_epoch = epoch;
      }
      const int64_t idx = perm[pos % n];
      put_row(tokens.data(), lengths.data(), b, T, train.rows[idx]);
      labels[b] = train.labels[idx];
      weights[b] = 1.0f / static_cast<float>(opt.batch);
    }
    grads.zero();
    double loss =
        clf.forward(*m.params, tokens.data(), lengths.data(), labels.data(), weights.data(), true);
    sync->before_last_backward(step);
    clf.backward(*m.params, grads, sync->hook());  // Σ over ranks: the global mean's gradient
    const float lr = lr_at(step, opt.lr, opt.lr * 0.1f, warmup, opt.steps);
    const double norm = sync->update(replica, lr, step).grad_norm;  // body and head alike
    loss = world.sum(loss);
    // As train does: a non-finite loss or gradient ends the run (every rank holds the same sums).
    if (!std::isfinite(loss) || !std::isfinite(norm))
      throw Error(std::string(name) + ": the " + (std::isfinite(loss) ? "gradient norm" : "loss") +
                  " became " + std::to_string(std::isfinite(loss) ? norm : loss) + " at step " +
                  std::to_string(step) + "; lower --lr");
    res.last_loss = loss;
    if (r == 0 && (step % opt.log_every == 0 || step == opt.steps || step == 1)) {
      std::printf("%s step %lld/%lld loss %.4f grad_norm %.3f lr %.2e (%.1fs)\n", name,
                  static_cast<long long>(step), static_cast<long long>(opt.steps), loss, norm, lr,
                  since(t0));
      std::fflush(stdout);
    }
  }
  res.train_s = since(t0);
  const auto t1 = Clock::now();
  res.conf = evaluate(clf, m, test, classes, world);
  res.eval_s = since(t1);
  return res;
}

nlohmann::json result_json(const RunResult& r) {
  nlohmann::json j = confusion_json(r.conf);
  j["train_seconds"] = r.train_s;
  j["eval_seconds"] = r.eval_s;
  j["last_loss"] = r.last_loss;
  return j;
}

// The body and head to start from: init's weights (and final norm), or a random body.
Model start_model(const RunConfig& cfg, const std::string& init, bool scratch, int classes,
                  uint64_t seed) {
  Model m;
  m.layout = std::make_unique<ParamLayout>(classifier_layout(cfg.model, classes));
  m.params = std::make_unique<ParamBuffer>(*m.layout);
  const HeadLayout hl(*m.layout);
  if (scratch) {
    init_params(*m.params, cfg.train.seed);
    init_head(*m.params, seed);
  } else {
    // The checkpoint's body (its tensors come first in both layouts), then its final norm.
    const ParamLayout body_layout(cfg.model, body_shard(cfg.model));
    ParamBuffer body(body_layout);
    comm::Group one;
    load_checkpoint_model(init, body, one, one);
    std::copy(body.data(), body.data() + body.size(), m.params->data());
    init_head(*m.params, seed);
    io::open_checkpoint_tensors(init, "model")
        ->read_f32("model.norm.weight", m.params->data() + hl.norm(), Shape{hl.C});
  }
  return m;
}

void write_outputs(const FinetuneOptions& opt, const nlohmann::json& results,
                   const std::vector<std::pair<std::string, Confusion>>& confusions,
                   const std::vector<std::string>& labels, const std::string& title) {
  fs::create_directories(opt.out);
  for (const auto& [name, c] : confusions)
    write_file_checked((fs::path(opt.out) / ("confusion-" + name + ".svg")).string(),
                       confusion_svg(c, labels, title + ", " + name));
  write_file_atomically((fs::path(opt.out) / "results.json").string(), results.dump(1) + "\n");
}

}  // namespace

nlohmann::json run_finetune(const FinetuneOptions& opt, comm::Group world) {
  if (opt.steps < 1 || opt.steps > 1000000000 || opt.batch < 1 || opt.batch > 1000000 ||
      opt.seq_len < 2 || opt.seq_len > 1000000 || opt.log_every < 1 || opt.log_every > 1000000000)
    throw Error(
        "finetune: --steps (1 to 1e9), --batch (1 to 1e6), --seq-len (2 to 1e6) and --log-every "
        "(1 to 1e9) are out of range");
  if (!(opt.lr > 0 && opt.lr <= 1e6) || !(opt.weight_decay >= 0 && opt.weight_decay <= 10) ||
      !(opt.clip >= 0 && std::isfinite(opt.clip)))
    throw Error("finetune: --lr must lie in (0, 1e6], --weight-decay in [0, 10]");
  if (opt.out.empty()) throw Error("finetune: give --out DIR");
  // Before anything is read: results.json, confusion-*.svg and classifier/ go into --out.
  check_output_dir("--out", opt.out,
                   {"results.json", "classifier", "confusion-finetuned.svg",
                    "confusion-from-scratch.svg", "confusion-naive-bayes.svg"},
                   {opt.init, opt.data});
  const nlohmann::json tj = read_trainer_json(opt.init);
  const RunConfig cfg = checkpoint_config(tj, opt.init + "/trainer.json");
  if (opt.seq_len > cfg.model.max_seq_len)
    throw Error("--seq-len " + std::to_string(opt.seq_len) + " is longer than the model's " +
                std::to_string(cfg.model.max_seq_len) + " tokens");
  configure_threads(cfg.train.threads);
  const std::string tok_path = checkpoint_tokenizer(opt.init);
  const Tokenizer tok(tok_path);
  const Dataset d = read_dataset(opt.data);
  const int K = static_cast<int>(d.labels.size());
  const Split train = tokenize(tok, d.train, opt.seq_len),
              test = tokenize(tok, d.test, opt.seq_len);
  const bool print = world.rank() == 0;
  if (print)
    std::printf("task %s: %d labels, %zu train and %zu test examples, %d rank(s), batch %d, T %d\n",
                d.task.c_str(), K, train.rows.size(), test.rows.size(), world.size(), opt.batch,
                opt.seq_len);

  // Baselines without a model.
  const int major = majority_label(train.labels, K);
  const Confusion majority(test.labels, std::vector<int>(test.labels.size(), major), K);
  NaiveBayes nb(K, tok.vocab_size());
  nb.fit(train.bags, train.labels);
  std::vector<int> nb_pred;
  for (const auto& bag : test.bags) nb_pred.push_back(nb.predict(bag));
  const Confusion bayes(test.labels, nb_pred, K);

  nlohmann::json results = {{"task", d.task},
                            {"labels", d.labels},
                            {"init", opt.init},
                            {"train_examples", train.rows.size()},
                            {"test_examples", test.rows.size()},
                            {"steps", opt.steps},
                            {"batch", opt.batch},
                            {"seq_len", opt.seq_len},
                            {"lr", opt.lr},
                            {"ranks", world.size()},
                            {"majority", confusion_json(majority)},
                            {"naive_bayes", confusion_json(bayes)}};
  std::vector<std::pair<std::string, Confusion>> confusions = {{"naive-bayes", bayes}};

  const char* main_name = opt.from_scratch ? "from_scratch" : "finetuned";
  Model m = start_model(cfg, opt.init, opt.from_scratch, K, opt.seed);
  const RunResult main = train_and_evaluate(m, cfg, train, test, K, opt, world, main_name);
  results[main_name] = result_json(main);
  confusions.emplace_back(opt.from_scratch ? "from-scratch" : "finetuned", main.conf);
  if (opt.scratch_baseline && !opt.from_scratch) {
    Model s = start_model(cfg, opt.init, true, K, opt.seed);
    const RunResult sr = train_and_evaluate(s, cfg, train, test, K, opt, world, "from_scratch");
    results["from_scratch"] = result_json(sr);
    confusions.emplace_back("from-scratch", sr.conf);
  }

  std::exception_ptr error;
  if (world.rank() == 0)
    io::guarded(error, [&] {
      ClassifierMeta meta;
      meta.task = d.task, meta.labels = d.labels, meta.seq_len = opt.seq_len, meta.cfg = cfg;
      meta.extra = {{"init", opt.init}, {"steps", opt.steps}, {"from_scratch", opt.from_scratch}};
      save_classifier((fs::path(opt.out) / "classifier").string(), meta, *m.params, tok_path);
      write_outputs(opt, results, confusions, d.labels, "KJV " + d.task);
    });
  io::agree_on_failure(world, error);

  if (print) {
    std::printf("\n%s on the test split (%zu verses):\n", d.task.c_str(), test.rows.size());
    std::printf("  %-14s %9s %9s %9s\n", "model", "accuracy", "macro-F1", "train s");
    auto row = [](const char* name, const nlohmann::json& j) {
      std::printf("  %-14s %9.4f %9.4f %9s\n", name, j["accuracy"].get<double>(),
                  j["macro_f1"].get<double>(),
                  j.contains("train_seconds")
                      ? std::to_string(std::lround(j["train_seconds"].get<double>())).c_str()
                      : "-");
    };
    for (const char* k : {"finetuned", "from_scratch", "naive_bayes", "majority"})
      if (results.contains(k)) row(k, results[k]);
    std::printf("\nconfusion of %s:\n%s", main_name, confusion_text(main.conf, d.labels).c_str());
    std::printf("wrote %s/results.json, %s/classifier\n", opt.out.c_str(), opt.out.c_str());
  }
  return results;
}

void run_classify(const std::string& ckpt, const std::string& text_file,
                  const std::string& out_file, int batch, comm::Group world, bool force) {
  if (batch < 1 || batch > 1000000) throw Error("classify: --batch must be between 1 and 1e6");
  if (out_file.empty()) throw Error("classify: give --out FILE");
  check_output_file("--out", out_file, {ckpt, text_file}, force);
  check_input_file(text_file, "--text", kMaxTextBytes);
  const std::string dir = find_classifier(ckpt);
  const ClassifierMeta meta = read_classifier_meta(dir);
  configure_threads(meta.cfg.train.threads);
  const int K = static_cast<int>(meta.labels.size());
  const ParamLayout layout = classifier_layout(meta.cfg.model, K);
  ParamBuffer params(layout);
  load_classifier_weights(dir, params);
  // A classifier whose training diverged would print null probabilities: refused.
  const auto finite = [](const float* p, size_t n) {
    return std::all_of(p, p + n, [](float v) { return std::isfinite(v); });
  };
  if (!finite(params.data(), static_cast<size_t>(params.size())))
    throw Error(dir +
                ": the classifier's weights hold values that are not finite (its training "
                "diverged); fine-tune it again with a lower --lr");
  const Tokenizer tok(tokenizer_in(dir, "classifier"));
  if (fs::exists(text_file) && fs::is_regular_file(text_file) && fs::file_size(text_file) == 0)
    throw Error(text_file + " is empty: nothing to classify (one text per line)");
  const std::vector<std::string> lines = read_text_lines(text_file);
  const int64_t T = meta.seq_len, n = static_cast<int64_t>(lines.size());
  std::vector<std::vector<int32_t>> rows;
  std::vector<double> cost;
  for (const std::string& l : lines) {
    rows.push_back(classifier_tokens(tok.encode_first(l, T), tok.bos_id(), T));
    cost.push_back(static_cast<double>(rows.back().size()));
  }
  const std::vector<int> owner = share_by_cost(cost, world.size());
  std::vector<int64_t> mine;
  for (int64_t i = 0; i < n; ++i)
    if (owner[i] == world.rank()) mine.push_back(i);
  const int64_t B =
      std::max<int64_t>(1, std::min<int64_t>(batch, std::max<size_t>(1, mine.size())));
  Classifier clf(layout, B, T);
  std::vector<std::pair<int64_t, std::string>> results;
  predict(clf, params, rows, mine, [&](int64_t i, const float* p) {
    nlohmann::json probs = nlohmann::json::object();
    for (int k = 0; k < K; ++k) probs[meta.labels[k]] = p[k];
    const nlohmann::json j = {{"line", i + 1},
                              {"text", lines[i]},
                              {"label", meta.labels[std::max_element(p, p + K) - p]},
                              {"probabilities", probs}};
    results.emplace_back(i, j.dump());
  });
  comm::Options o = world.options();  // a rank with a longer share is waited for while busy
  o.wait_for_busy = true;
  world.set_options(o);
  write_lines_from_rank0(world, gather_in_order(world, results, n), out_file);
  if (world.rank() == 0)
    std::printf("classified %lld lines on %d rank(s) with %s: wrote %s\n",
                static_cast<long long>(n), world.size(), dir.c_str(), out_file.c_str());
}

}  // namespace parallama::finetune
