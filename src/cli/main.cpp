// parallama: train LLaMA-family models. One binary; see README.md.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <set>

#include "cli/commands.h"
#include "comm/launcher.h"
#include "data/prepare.h"
#include "io/paths.h"
#include "tensor/error.h"
#include "tensor/heap.h"
#include "train/plot.h"
#include "train/preempt.h"
#include "train/report.h"
#include "train/run_dir.h"
#include "train/trainer.h"

namespace {

// One line on stderr, once per job: when every process failed (a bad setting, seen by all, or an
// error they agreed on), rank 0 prints the line, and any different line of another rank, and
// every process exits normally with `code`. Otherwise this process was the first to see it: it
// prints the line (naming its rank) and ends every process, so that none waits forever for it.
int fail(parallama::comm::Group& world, int code, const std::string& line) {
  if (world.size() == 1) {
    std::fprintf(stderr, "%s\n", line.c_str());
    return code;
  }
  const auto lines = parallama::comm::gather_failures(line, 3.0);
  if (!lines) {
    if (world.rank() == 0)
      std::fprintf(stderr, "%s\n", line.c_str());
    else
      std::fprintf(stderr, "rank %d: %s\n", world.rank(), line.c_str());
    parallama::comm::abort_job(code);
  }
  std::set<std::string> said;
  for (size_t r = 0; r < lines->size(); ++r)
    if (said.insert((*lines)[r]).second)
      std::fprintf(stderr, r == 0 ? "%s%s\n" : "rank %s: %s\n",
                   r == 0 ? "" : std::to_string(r).c_str(), (*lines)[r].c_str());
  return code;
}

// A command-line number that must be finite and within [lo, hi].
CLI::Validator finite_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi) {
          char range[96];
          std::snprintf(range, sizeof range, "a number between %g and %g", lo, hi);
          return "'" + text + "' is not " + range;
        }
        return std::string();
      },
      "NUMBER");
}

// A command-line whole number of at least lo.
CLI::Validator whole_at_least(long long lo) {
  return CLI::Validator(
      [lo](std::string& text) -> std::string {
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(text.c_str(), &end, 10);
        if (end == text.c_str() || *end != '\0' || errno || v < lo)
          return "'" + text + "' is not a whole number of at least " + std::to_string(lo);
        return std::string();
      },
      "INT");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace parallama;
  take_signals_on_a_thread();  // before any other thread: see train/preempt.h
  // Under an MPI launcher every process joins the world group; otherwise the group of one.
  // Collectives there allocate and free scratch blocks every step: keep them (tensor/heap.h).
  if (comm::launched()) retain_freed_memory();
  comm::Group world = comm::launched() ? comm::world() : comm::Group();
  if (world.rank() != 0 && !std::freopen("/dev/null", "w", stdout)) return 3;  // rank 0 reports
  CLI::App app{"parallama: train LLaMA-family language models"};
  app.require_subcommand(1);
  std::string config;
  bool json = false, profile = false;

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
  prepare_cmd->add_option("--tokenizer", prep.tokenizer,
                          "reuse this tokenizer: a sentencepiece tokenizer.model, or a byte-level "
                          "BPE tokenizer.json (Llama 3's; its tokenizer_config.json beside it)");
  prepare_cmd->add_option("--val-fraction", prep.val_fraction,
                          "share of the text held out for validation");

  TrainOptions topt;
  int dp = 0, tp = 0, pp = 0, zero = -1;
  auto add_layout = [&](CLI::App* sub) {
    sub->add_option("--zero", zero, "ZeRO stage 0, 1 or 2 (same as --parallel.zero)")
        ->check(whole_at_least(0));
    sub->add_option("--dp", dp,
                    "data-parallel replicas (same as --parallel.dp; under mpirun: the processes "
                    "over tp × pp)")
        ->check(whole_at_least(1));
    sub->add_option("--tp", tp, "tensor-parallel ranks per replica (same as --parallel.tp)")
        ->check(whole_at_least(1));
    sub->add_option("--pp", pp, "pipeline stages (same as --parallel.pp); dp·tp·pp = processes")
        ->check(whole_at_least(1));
  };
  std::string sync_flag, precision_flag;
  auto add_precision = [&](CLI::App* sub) {
    sub->add_option("--precision", precision_flag,
                    "fp32, or bf16 / fp16 mixed precision (same as --train.precision)");
  };
  CLI::App* train_cmd = with_config("train", "train a model");
  add_layout(train_cmd);
  add_precision(train_cmd);
  train_cmd->add_option("--sync", sync_flag,
                        "allreduce, ps, ps-async, local or diloco (same as --parallel.sync)");
  train_cmd->add_option("--resume", topt.resume,
                        "continue from a checkpoint directory, a run directory (its latest "
                        "checkpoint), or auto: train.out_dir's latest, if there is one");
  train_cmd->add_option("--init", topt.init,
                        "start from this checkpoint's weights (fine-tuning; a fresh optimizer)");
  train_cmd->add_flag("--force", topt.force,
                      "start over in a train.out_dir that holds another run's checkpoints "
                      "(they are deleted)");
  train_cmd->add_option("--stop-at", topt.stop_at, "stop after this step, with a checkpoint")
      ->check(whole_at_least(1));
  train_cmd
      ->add_option("--report-every", topt.report_every,
                   "rewrite train.out_dir/report.html every N steps and at the end (a page to "
                   "keep open in a browser; measures the GEMM peak first, for MFU)")
      ->check(whole_at_least(1));
  CLI::App* bench_cmd =
      with_config("bench", "time training steps on random tokens: tok/s, GFLOP/s, MFU");
  add_precision(bench_cmd);
  bench_cmd->add_flag("--profile", profile,
                      "print where a step's time goes, per kernel kind and per model part");
  bench_cmd->add_flag("--json", json, "also print the results as one JSON object on the last line");
  add_layout(bench_cmd);
  CLI::App* info_cmd =
      with_config("info", "print a model's shape and parameter count (and the mesh of a layout)");
  add_layout(info_cmd);
  PlanOptions plan_opt;
  CLI::App* plan_cmd =
      with_config("plan", "memory, communication, bubble, step time and MFU of a layout, on paper");
  add_layout(plan_cmd);
  plan_cmd->add_option("--precision", plan_opt.precision,
                       "fp32, or bf16 / fp16 (mixed: fp32 master weights)");
  plan_cmd->add_option("--device-tflops", plan_opt.device.tflops,
                       "dense peak TFLOP/s per device (default: H100 SXM, 989 bf16 / 495 TF32)");
  plan_cmd->add_option("--compute-efficiency", plan_opt.device.efficiency,
                       "share of the peak the kernels sustain (default 0.7)");
  plan_cmd->add_option("--link-gbps", plan_opt.device.link_gbps,
                       "Gbit/s per rank between machines, for dp and pp (default 400)");
  plan_cmd->add_option("--tp-link-gbps", plan_opt.device.tp_link_gbps,
                       "Gbit/s per rank within a machine, for tp (default 3600, NVLink)");
  plan_cmd->add_option("--device-gb", plan_opt.device.memory_gb,
                       "memory per device, GB (default 80)");
  plan_cmd->add_flag("--json", json, "also print the plan as one JSON object on the last line");

  std::string ckpt, prompt, data, run_dir;
  SampleConfig sc;
  int64_t eval_batches = 0;
  CLI::App* gen_cmd = app.add_subcommand("generate", "sample text from a checkpoint (KV cache)");
  gen_cmd->add_option("--ckpt", ckpt, "checkpoint directory")->required();
  std::string prompts_file, gen_out;
  int64_t gen_batch = 8;
  CLI::Option* prompt_opt = gen_cmd->add_option("--prompt", prompt, "text to continue");
  CLI::Option* prompts_opt =
      gen_cmd
          ->add_option("--prompts", prompts_file,
                       "or a file of prompts, one per line or JSON Lines {\"id\", \"prompt\", "
                       "\"seed\"}; the processes share them (data-parallel)")
          ->excludes(prompt_opt);
  gen_cmd->add_option("--out", gen_out, "with --prompts: the results, one JSON line per prompt")
      ->needs(prompts_opt);
  gen_cmd->add_option("--batch", gen_batch, "with --prompts: prompts generated together")
      ->check(whole_at_least(1))
      ->needs(prompts_opt);
  gen_cmd->add_option("--temperature", sc.temperature, "0 = greedy")->check(finite_in(0, 1e6));
  gen_cmd->add_option("--top-p", sc.top_p, "nucleus sampling mass")->check(finite_in(1e-9, 1));
  gen_cmd->add_option("--seed", sc.seed, "sampling seed");
  gen_cmd->add_option("--max-tokens", sc.max_tokens, "tokens to generate at most")
      ->check(whole_at_least(1));
  gen_cmd->add_option("--tp", tp, "tensor-parallel ranks (= processes under mpirun)")
      ->check(whole_at_least(1));
  bool print_ids = false, force_out = false;
  // Commands that run under mpirun without a run config: how long a rank waits for the others.
  double timeout_s = 120;
  auto add_timeout = [&](CLI::App* sub) {
    sub->add_option("--timeout", timeout_s,
                    "seconds a rank waits for the others before it names the one that did not "
                    "arrive and ends the job (as parallel.timeout_s of train)")
        ->check(finite_in(0.001, 1e6));
  };
  add_timeout(gen_cmd);
  gen_cmd->add_flag("--force", force_out, "with --prompts: overwrite --out if it exists")
      ->needs(prompts_opt);
  gen_cmd->add_flag("--ids", print_ids, "also print the generated token ids (a JSON array)")
      ->excludes(prompts_opt);
  CLI::App* eval_cmd =
      app.add_subcommand("eval", "loss and perplexity of a checkpoint on a token file");
  eval_cmd->add_option("--ckpt", ckpt, "checkpoint directory")->required();
  std::string eval_text, tok_text;
  CLI::Option* data_opt =
      eval_cmd->add_option("--data", data, "token shard (e.g. data/kjv/val.bin)");
  eval_cmd
      ->add_option("--text", eval_text,
                   "or a UTF-8 text file, tokenized as prepare does (<s> before each line)")
      ->excludes(data_opt);
  add_timeout(eval_cmd);
  eval_cmd->add_option("--batches", eval_batches, "evaluate at most this many batches (0 = all)")
      ->check(whole_at_least(0));
  eval_cmd
      ->add_option("--tp", tp,
                   "tensor-parallel ranks; the processes / tp replicas share the batches")
      ->check(whole_at_least(1));
  CLI::App* tok_cmd = app.add_subcommand(
      "tokenize",
      "the token ids of each line of a text file (JSON), under a checkpoint's tokenizer");
  std::string tok_file;
  bool tok_json = false;
  CLI::Option* tok_ckpt = tok_cmd->add_option("--ckpt", ckpt, "checkpoint directory");
  tok_cmd->add_option("--tokenizer", tok_file, "a tokenizer.model or tokenizer.json instead")
      ->excludes(tok_ckpt);
  tok_cmd->add_option("--text", tok_text, "UTF-8 text file (one document per non-blank line)")
      ->required();
  tok_cmd->add_flag("--json", tok_json,
                    "--text is a JSON array of strings, each tokenized whole (newlines and all)");
  std::string conv_from, conv_to, conv_dtype;
  double shard_mb = 5000;
  CLI::App* convert_cmd = app.add_subcommand(
      "convert",
      "convert a Hugging Face Llama directory (hf:DIR) to a checkpoint, or back; or a checkpoint "
      "to gguf:FILE (llama.cpp)");
  convert_cmd->add_option("--from", conv_from, "hf:DIR, or a checkpoint (or run) directory")
      ->required();
  convert_cmd->add_option("--to", conv_to, "a checkpoint directory, hf:DIR, or gguf:FILE")
      ->required();
  convert_cmd->add_option("--dtype", conv_dtype,
                          "tensor type of hf:DIR output: f32, bf16 or f16 (default: the type "
                          "the model was converted from, else f32); of gguf:FILE: f32, f16 "
                          "(default) or q8_0");
  bool allow_overflow = false;
  convert_cmd->add_flag("--allow-overflow", allow_overflow,
                        "fp16 output (--dtype f16; gguf:FILE's default): clamp values beyond "
                        "fp16's range (|x| >= 65520, which would become inf) to ±65504 instead "
                        "of refusing the conversion");
  convert_cmd->add_option("--shard-mb", shard_mb, "largest weight file of hf:DIR output, MB")
      ->check(finite_in(1e-6, 1e15))
      ->group("");  // hidden: tests split small models
  convert_cmd->add_flag("--force", force_out, "overwrite an existing gguf:FILE");
  std::string trace_json, trace_svg;
  CLI::App* plot_cmd = app.add_subcommand(
      "plot", "draw RUN_DIR/loss.svg (and pipeline.svg from pipeline_trace.json), or one trace");
  CLI::Option* run_dir_opt = plot_cmd->add_option("run_dir", run_dir, "training run directory");
  CLI::Option* trace_opt =
      plot_cmd->add_option("--trace", trace_json, "draw this Chrome trace JSON as a timeline")
          ->excludes(run_dir_opt);
  plot_cmd->add_option("--out", trace_svg, "SVG for --trace (default: the trace's name, .svg)")
      ->needs(trace_opt);
  plot_cmd->add_flag("--force", force_out, "with --trace: overwrite the SVG if it exists")
      ->needs(trace_opt);

  CLI::App* settings_cmd = app.add_subcommand(
      "settings", "print every configuration setting: type, default and meaning (Markdown)");
  std::string report_out;
  double peak_gflops = 0;
  CLI::App* report_cmd = app.add_subcommand(
      "report", "write RUN_DIR/report.html: a run's charts, ranks and configuration in one page");
  report_cmd->add_option("run_dir", run_dir, "training run directory")->required();
  report_cmd->add_option("--out", report_out, "the HTML file (default RUN_DIR/report.html)");
  report_cmd
      ->add_option("--peak-gflops", peak_gflops,
                   "GEMM peak of the run's machines, GFLOP/s summed over its ranks, for MFU "
                   "(default: the peak the run measured, with --report-every)")
      ->check(finite_in(1e-6, 1e15));
  report_cmd->add_flag("--force", force_out, "overwrite --out if it exists");

  FinetuneCommands* finetune_cmds = add_finetune_commands(app);
  for (CLI::App* sub : finetune_subcommands(finetune_cmds)) add_timeout(sub);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    const CLI::App* sub = app.get_subcommands().empty() ? nullptr : app.get_subcommands().front();
    return fail(
        world, 2,
        "error: " + what + " (see parallama " + (sub ? sub->get_name() + " " : "") + "--help)");
  }
  try {
    CLI::App* sub = app.get_subcommands().front();
    world.set_options({false, timeout_s});  // train, bench: parallel.timeout_s, set below
    if (sub == prepare_cmd) return prepare(prep), 0;
    if (const int rc = run_finetune_commands(finetune_cmds, sub, world); rc >= 0) return rc;
    if (sub == convert_cmd) {
      if (world.size() > 1) throw Error("convert runs in one process (start it without mpirun)");
      return run_convert(conv_from, conv_to, conv_dtype, shard_mb, allow_overflow, force_out);
    }
    // --ckpt may name a run directory: its latest checkpoint.
    if (!ckpt.empty() && !std::filesystem::exists(std::filesystem::path(ckpt) / "trainer.json"))
      if (const std::string latest = latest_checkpoint(ckpt); !latest.empty()) ckpt = latest;
    if (sub == gen_cmd && !prompts_file.empty())
      return run_generate_many(ckpt, prompts_file, gen_out, sc, gen_batch, world, std::max(tp, 1),
                               force_out);
    if (sub == gen_cmd && prompt.empty())
      throw Error("generate needs --prompt TEXT or --prompts FILE");
    if (sub == gen_cmd) return run_generate(ckpt, prompt, sc, world, std::max(tp, 1), print_ids);
    if (sub == eval_cmd && data.empty() && eval_text.empty())
      throw Error("eval needs --data SHARD or --text FILE");
    if (sub == eval_cmd)
      return run_eval(ckpt, data, eval_text, eval_batches, world, std::max(tp, 1));
    if (sub == tok_cmd) return run_tokenize(ckpt, tok_file, tok_text, tok_json);
    if (sub == settings_cmd) return run_settings();
    if (sub == report_cmd) {
      if (world.size() > 1) throw Error("report runs in one process (start it without mpirun)");
      if (!report_out.empty())
        check_output_file("--out", report_out, {run_dir + "/metrics.jsonl"}, force_out);
      std::printf("wrote %s\n", write_report(run_dir, report_out, peak_gflops).c_str());
      return 0;
    }
    if (sub == plot_cmd) {
      if (!trace_json.empty()) {  // the SVG is checked before the trace is read
        if (trace_svg.empty())
          trace_svg = std::filesystem::path(trace_json).replace_extension(".svg").string();
        check_output_file("--out", trace_svg, {trace_json}, force_out);
      }
      const auto written = trace_json.empty() ? plot_run(run_dir)
                                              : std::vector{plot_timeline(trace_json, trace_svg)};
      for (const std::string& path : written) std::printf("wrote %s\n", path.c_str());
      return 0;
    }
    Overrides ov = parse_overrides(sub->remaining());
    if (dp > 0) ov.emplace_back("parallel.dp", std::to_string(dp));
    if (tp > 0) ov.emplace_back("parallel.tp", std::to_string(tp));
    if (pp > 0) ov.emplace_back("parallel.pp", std::to_string(pp));
    if (zero >= 0) ov.emplace_back("parallel.zero", std::to_string(zero));
    if (!sync_flag.empty()) ov.emplace_back("parallel.sync", sync_flag);
    if (!precision_flag.empty()) ov.emplace_back("train.precision", precision_flag);
    // Under a launcher, train and bench take their data-parallel replicas from the number of
    // processes unless --dp (or parallel.dp) says otherwise.
    const bool runs_ranks = (sub == train_cmd || sub == bench_cmd) && comm::launched();
    const RunConfig cfg =
        load_run_config(config, ov, sub == info_cmd ? ConfigUse::model : ConfigUse::run,
                        runs_ranks ? world.size() : 0);
    world.set_options({cfg.parallel.watch.check_collectives, cfg.parallel.watch.timeout_s});
    if (sub == train_cmd) return train(cfg, topt, world);
    if (sub == bench_cmd) return run_bench(cfg, json, world, profile);
    if (sub == info_cmd) return run_info(cfg);
    if (sub == plan_cmd) return run_plan(cfg, plan_opt, json);
  } catch (const parallama::comm::PeerLost& e) {
    // Some process cannot be reached: say so now and end the job (no gathering of the others'
    // failures, which would wait for the ones that cannot answer).
    std::fprintf(stderr, "error: %s\n", e.what());
    if (world.size() > 1) parallama::comm::abort_job(2);
    return 2;
  } catch (const Error& e) {
    return fail(world, 2, "error: " + std::string(e.what()));
  } catch (const std::bad_alloc&) {
    return fail(world, 2,
                "error: out of memory; lower train.batch_size or train.seq_len, or spread the "
                "model over more processes");
  } catch (const std::exception& e) {
    return fail(world, 3, "internal error: " + std::string(e.what()));
  }
  return 1;
}
