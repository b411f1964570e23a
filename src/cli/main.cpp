// parallama: train LLaMA-family models. One binary; see README.md.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "tensor/error.h"

int main(int argc, char** argv) {
  using namespace parallama;
  CLI::App app{"parallama: train LLaMA-family language models"};
  app.require_subcommand(1);
  std::string config;
  bool json = false;

  auto add = [&](const char* name, const char* help) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->add_option("--config", config, "TOML configuration file (see configs/)");
    sub->allow_extras();  // --section.key value overrides, checked by the config reader
    sub->footer("Any configuration key can be overridden: --optim.lr 3e-4 --train.steps 100");
    return sub;
  };
  CLI::App* train = add("train", "train a model");
  CLI::App* bench = add("bench", "time training steps on random tokens: tok/s, GFLOP/s, MFU");
  bench->add_flag("--json", json, "also print the results as one JSON object on the last line");
  CLI::App* info = add("info", "print a model's shape and parameter count");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    CLI::App* sub = app.get_subcommands().front();
    const RunConfig cfg = load_run_config(config, parse_overrides(sub->remaining()));
    if (sub == train) return run_train(cfg);
    if (sub == bench) return run_bench(cfg, json);
    if (sub == info) return run_info(cfg);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 3;
  }
  return 1;
}
