// parallama: train LLaMA-family models. One binary; see README.md.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "data/prepare.h"
#include "tensor/error.h"
#include "train/plot.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  using namespace parallama;
  CLI::App app{"parallama: train LLaMA-family language models"};
  app.require_subcommand(1);
  std::string config;
  bool json = false;

  auto with_config = [&](const char* name, const char* help) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->add_option("--config", config, "TOML configuration file (see configs/)");
    sub->allow_extras();  // --section.key value overrides, checked by the config reader
    sub->footer("Any configuration key can be overridden: --optim.lr 3e-4 --train.steps 100");
    return sub;
  };
  PrepareOptions prep;
  CLI::App* prepare_cmd =
      app.add_subcommand("prepare", "train a BPE tokenizer and write token shards");
  prepare_cmd->add_option("--text", prep.texts, "UTF-8 text files (one document per line)")
      ->required();
  prepare_cmd->add_option("--vocab", prep.vocab_size, "vocabulary size of the tokenizer to train");
  prepare_cmd->add_option("--out", prep.out_dir, "output directory")->required();
  prepare_cmd->add_option("--tokenizer", prep.tokenizer, "reuse this sentencepiece model");
  prepare_cmd->add_option("--val-fraction", prep.val_fraction,
                          "share of the text held out for validation");

  TrainOptions topt;
  CLI::App* train_cmd = with_config("train", "train a model");
  train_cmd->add_option("--resume", topt.resume, "continue from this checkpoint directory");
  train_cmd->add_option("--stop-at", topt.stop_at, "stop after this step, with a checkpoint");
  CLI::App* bench_cmd =
      with_config("bench", "time training steps on random tokens: tok/s, GFLOP/s, MFU");
  bench_cmd->add_flag("--json", json, "also print the results as one JSON object on the last line");
  CLI::App* info_cmd = with_config("info", "print a model's shape and parameter count");

  std::string ckpt, prompt, data, run_dir;
  SampleConfig sc;
  int64_t eval_batches = 0;
  CLI::App* gen_cmd = app.add_subcommand("generate", "sample text from a checkpoint (KV cache)");
  gen_cmd->add_option("--ckpt", ckpt, "checkpoint directory")->required();
  gen_cmd->add_option("--prompt", prompt, "text to continue")->required();
  gen_cmd->add_option("--temperature", sc.temperature, "0 = greedy");
  gen_cmd->add_option("--top-p", sc.top_p, "nucleus sampling mass");
  gen_cmd->add_option("--seed", sc.seed, "sampling seed");
  gen_cmd->add_option("--max-tokens", sc.max_tokens, "tokens to generate at most");
  CLI::App* eval_cmd =
      app.add_subcommand("eval", "loss and perplexity of a checkpoint on a token file");
  eval_cmd->add_option("--ckpt", ckpt, "checkpoint directory")->required();
  eval_cmd->add_option("--data", data, "token shard (e.g. data/kjv/val.bin)")->required();
  eval_cmd->add_option("--batches", eval_batches, "evaluate at most this many batches (0 = all)");
  CLI::App* plot_cmd = app.add_subcommand("plot", "write RUN_DIR/loss.svg from metrics.jsonl");
  plot_cmd->add_option("run_dir", run_dir, "training run directory")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    CLI::App* sub = app.get_subcommands().front();
    if (sub == prepare_cmd) return prepare(prep), 0;
    if (sub == gen_cmd) return run_generate(ckpt, prompt, sc);
    if (sub == eval_cmd) return run_eval(ckpt, data, eval_batches);
    if (sub == plot_cmd) return std::printf("wrote %s\n", plot_losses(run_dir).c_str()), 0;
    const RunConfig cfg = load_run_config(config, parse_overrides(sub->remaining()));
    if (sub == train_cmd) return train(cfg, topt);
    if (sub == bench_cmd) return run_bench(cfg, json);
    if (sub == info_cmd) return run_info(cfg);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 3;
  }
  return 1;
}
