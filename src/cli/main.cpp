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
#include "launch/hosts.h"
#include "launch/supervisor.h"
#include "tensor/error.h"
#include "tensor/heap.h"
#include "train/auto_run.h"
#include "train/bench.h"
#include "train/calibrate.h"
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

using namespace parallama;

// Options that more than one subcommand takes.
struct Common {
  std::string ckpt, run_dir;
  int tp = 0;
  bool force = false;
  // Commands that run under mpirun without a run config: how long a rank waits for the others.
  double timeout_s = 120;
  void add_timeout(CLI::App* sub) {
    sub->add_option("--timeout", timeout_s,
                    "seconds a rank waits for the others before it names the one that did not "
                    "arrive and ends the job (as parallel.timeout_s of train)")
        ->check(finite_in(0.001, 1e6));
  }
};

// train, bench, info, plan: commands of a run configuration.
struct RunCommands {
  CLI::App *train = nullptr, *bench = nullptr, *info = nullptr, *plan = nullptr,
           *calibrate = nullptr;
  std::string config, sync_flag, precision_flag, profile_out = "profile.json";
  std::string layout, calibration;  // train, bench: --layout auto, --calibration FILE
  TrainOptions topt;
  PlanOptions plan_opt;
  int dp = 0, pp = 0, zero = -1;
  bool json = false, profile = false;

  CLI::App* with_config(CLI::App& app, const char* name, const char* help) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->add_option("--config", config, "TOML configuration file (see configs/)");
    sub->allow_extras();  // --section.key value overrides, checked by the config reader
    sub->footer("Any configuration key can be overridden: --optim.lr 3e-4 --train.steps 100");
    return sub;
  }
  void add_layout(CLI::App* sub, Common& c) {
    sub->add_option("--zero", zero, "ZeRO stage 0, 1 or 2 (same as --parallel.zero)")
        ->check(whole_at_least(0));
    sub->add_option("--dp", dp,
                    "data-parallel replicas (same as --parallel.dp; under mpirun: the processes "
                    "over tp × pp)")
        ->check(whole_at_least(1));
    sub->add_option("--tp", c.tp, "tensor-parallel ranks per replica (same as --parallel.tp)")
        ->check(whole_at_least(1));
    sub->add_option("--pp", pp, "pipeline stages (same as --parallel.pp); dp·tp·pp = processes")
        ->check(whole_at_least(1));
  }
  void add_precision(CLI::App* sub) {
    sub->add_option("--precision", precision_flag,
                    "fp32, or bf16 / fp16 mixed precision (same as --train.precision)");
    sub->add_option("--layout", layout,
                    "auto: the planner's fastest layout for the processes started (dp, tp, pp, "
                    "ZeRO, micro-batches, recompute), the global batch kept")
        ->check(CLI::IsMember({"auto"}));
    sub->add_option("--calibration", calibration,
                    "a machine profile (parallama calibrate) the run predicts its step time with "
                    "and --layout auto plans with");
  }
  void add_train(CLI::App& app, Common& c) {
    train = with_config(app, "train", "train a model");
    add_layout(train, c);
    add_precision(train);
    train->add_option("--sync", sync_flag,
                      "allreduce, ps, ps-async, local or diloco (same as --parallel.sync)");
    train->add_option("--resume", topt.resume,
                      "continue from a checkpoint directory, a run directory (its latest "
                      "checkpoint), or auto: train.out_dir's latest, if there is one");
    train->add_option("--init", topt.init,
                      "start from this checkpoint's weights (fine-tuning; a fresh optimizer)");
    train->add_flag("--force", topt.force,
                    "start over in a train.out_dir that holds another run's checkpoints "
                    "(they are deleted)");
    train->add_option("--stop-at", topt.stop_at, "stop after this step, with a checkpoint")
        ->check(whole_at_least(1));
    train
        ->add_option("--report-every", topt.report_every,
                     "rewrite train.out_dir/report.html every N steps and at the end (a page to "
                     "keep open in a browser; measures the GEMM peak first, for MFU)")
        ->check(whole_at_least(1));
  }
  void add(CLI::App& app, Common& c) {
    add_train(app, c);
    bench = with_config(app, "bench", "time training steps on random tokens: tok/s, GFLOP/s, MFU");
    add_precision(bench);
    bench->add_flag("--profile", profile,
                    "print where a step's time goes, per kernel kind and per model part");
    bench->add_flag("--json", json, "also print the results as one JSON object on the last line");
    add_layout(bench, c);
    info = with_config(app, "info",
                       "print a model's shape and parameter count (and the mesh of a layout)");
    add_layout(info, c);
    plan = with_config(app, "plan",
                       "memory, communication, bubble, step time and MFU of a layout, on paper");
    add_layout(plan, c);
    plan->add_option("--precision", plan_opt.precision,
                     "fp32, or bf16 / fp16 (mixed: fp32 master weights)");
    plan->add_option("--device-tflops", plan_opt.device.tflops,
                     "dense peak TFLOP/s per device (default: H100 SXM, 989 bf16 / 495 TF32)");
    plan->add_option("--compute-efficiency", plan_opt.device.efficiency,
                     "share of the peak the kernels sustain (default 0.7)");
    plan->add_option("--link-gbps", plan_opt.device.link_gbps,
                     "Gbit/s per rank between machines, for dp and pp (default 400)");
    plan->add_option("--tp-link-gbps", plan_opt.device.tp_link_gbps,
                     "Gbit/s per rank within a machine, for tp (default 3600, NVLink)");
    plan->add_option("--device-gb", plan_opt.device.memory_gb,
                     "memory per device, GB (default 80)");
    plan->add_option("--profile", plan_opt.profile,
                     "a machine profile (parallama calibrate) in place of the assumed device; "
                     "the flags above override its values");
    plan->add_flag("--auto", plan_opt.auto_layout,
                   "search every layout (dp, tp, pp, virtual stages, ZeRO, micro-batches, "
                   "recompute) for the ranks and global batch, and print the ten fastest that fit");
    plan->add_option("--hosts", plan_opt.hosts, "--auto: hosts (default 1)")
        ->check(whole_at_least(1));
    plan->add_option("--ranks-per-host", plan_opt.ranks_per_host,
                     "--auto: ranks a host (default: the configuration's dp x tp x pp)")
        ->check(whole_at_least(1));
    plan->add_option("--global-batch", plan_opt.global_batch,
                     "--auto: sequences a step over all ranks (default: the configuration's dp x "
                     "batch_size x micro_batches)")
        ->check(whole_at_least(1));
    plan->add_flag("--any-precision", plan_opt.any_precision,
                   "--auto: consider fp32 and bf16 (default: --precision only)");
    plan->add_flag("--json", json, "also print the plan as one JSON object on the last line");
    calibrate = with_config(app, "calibrate",
                            "measure this machine (under mpirun: every host) for plan --profile: "
                            "GEMM rates at the model's shapes, memory bandwidth, links");
    calibrate->add_option("--out", profile_out, "the profile to write (default profile.json)");
    calibrate->add_flag("--force", plan_opt.force, "replace --out if it exists");
  }
  // The configuration of a parsed command sub; runs_on: its processes (0: not run on any).
  RunConfig config_of(CLI::App* sub, const Common& c, int runs_on,
                      const Overrides& extra = {}) const {
    Overrides ov = parse_overrides(sub->remaining());
    ov.insert(ov.end(), extra.begin(), extra.end());
    if (dp > 0) ov.emplace_back("parallel.dp", std::to_string(dp));
    if (c.tp > 0) ov.emplace_back("parallel.tp", std::to_string(c.tp));
    if (pp > 0) ov.emplace_back("parallel.pp", std::to_string(pp));
    if (zero >= 0) ov.emplace_back("parallel.zero", std::to_string(zero));
    if (!sync_flag.empty()) ov.emplace_back("parallel.sync", sync_flag);
    if (!precision_flag.empty()) ov.emplace_back("train.precision", precision_flag);
    return load_run_config(
        config, ov, sub == info || sub == calibrate ? ConfigUse::model : ConfigUse::run, runs_on);
  }
  int run(CLI::App* sub, const Common& c, comm::Group& world) {
    if (sub != train && sub != bench && sub != info && sub != plan && sub != calibrate) return -1;
    if (sub == calibrate) {
      if (config.empty()) return run_calibrate(world, profile_out, plan_opt.force, nullptr);
      const RunConfig cfg = config_of(sub, c, 0);
      return run_calibrate(world, profile_out, plan_opt.force, &cfg.model);
    }
    // Under a launcher, train and bench take their data-parallel replicas from the number of
    // processes unless --dp (or parallel.dp) says otherwise.
    const bool runs_ranks = (sub == train || sub == bench) && comm::launched();
    RunConfig cfg = config_of(sub, c, runs_ranks ? world.size() : 0);
    world.set_options({cfg.parallel.watch.check_collectives, cfg.parallel.watch.timeout_s});
    if (sub == train || sub == bench) {
      // The device the run predicts its step time with: a profile, or (--layout auto, bench) a
      // quick calibration of these machines.
      const std::optional<Device> device =
          run_device(cfg, world, calibration, sub == bench || !layout.empty());
      if (!layout.empty()) {
        const Overrides chosen = auto_layout(cfg, world, *device);
        cfg = config_of(sub, c, runs_ranks ? world.size() : 0, chosen);
      }
      TrainOptions topt_run = topt;
      topt_run.device = device;
      if (sub == train) return parallama::train(cfg, topt_run, world);
      return run_bench(cfg, json, world, profile, device);
    }
    if (sub == info) return run_info(cfg);
    PlanOptions po = plan_opt;
    for (const char* flag : {"--device-tflops", "--compute-efficiency", "--link-gbps",
                             "--tp-link-gbps", "--device-gb"})
      if (plan->count(flag) > 0) po.given.push_back(flag);
    return run_plan(cfg, po, json);
  }
};

// launch: the supervisor over mpirun (launch/supervisor.h).
struct LaunchCommand {
  CLI::App* sub = nullptr;
  launch::Options opt;
  std::string connect;
  std::vector<std::string> command;

  void add(CLI::App& app) {
    sub = app.add_subcommand(
        "launch",
        "run train over a hostfile's hosts with mpirun, relaunching on the hosts left "
        "when one fails: launch --hostfile H [options] -- train ARGS...");
    sub->add_option("--hostfile", opt.hostfile, "hosts, one a line: NAME [slots=N]");
    sub->add_option("--ranks-per-host", opt.ranks_per_host, "processes a host (default: its slots)")
        ->check(whole_at_least(1));
    sub->add_option("--min-hosts", opt.min_hosts, "stop when fewer hosts answer (default 1)")
        ->check(whole_at_least(1));
    sub->add_option("--max-restarts", opt.max_restarts, "relaunches at the most (default 3)")
        ->check(whole_at_least(0));
    sub->add_option("--agent", opt.agent,
                    "the rsh agent mpirun starts ranks with (default: $OMPI_MCA_plm_rsh_agent, "
                    "else ssh); it also asks each host whether it still answers");
    sub->add_option("--subnet", opt.subnet,
                    "where hosts call back, A.B.C.D/N (default: $OMPI_MCA_oob_tcp_if_include)");
    sub->add_option("--probe-timeout", opt.probe_timeout_s,
                    "seconds a host has to answer (default 5)")
        ->check(finite_in(0.1, 600));
    sub->add_option("--connect", connect, "(run on a host by launch itself) call back ADDR:PORT")
        ->group("");
    sub->add_option("command", command, "-- train ARGS...: the training run");
  }
  int run(CLI::App* s) const {
    if (s != sub) return -1;
    if (!connect.empty()) return launch::connect_back(connect);
    if (opt.hostfile.empty()) throw Error("launch: --hostfile is required");
    auto resolve = [](const std::vector<std::string>& args, int nprocs) {
      CLI::App app;
      Common c;
      RunCommands r;
      r.add_train(app, c);
      std::vector<std::string> argv(args.rbegin(), args.rend());
      argv.push_back("train");
      try {
        app.parse(argv);
      } catch (const CLI::ParseError& e) {
        throw Error(std::string("train: ") + e.what());
      }
      return r.config_of(r.train, c, nprocs);
    };
    return launch::supervise(opt, command, resolve,
                             std::filesystem::read_symlink("/proc/self/exe"));
  }
};

// generate, eval, tokenize: commands of a checkpoint's model or tokenizer.
struct InferCommands {
  CLI::App *generate = nullptr, *eval = nullptr, *tokenize = nullptr;
  SampleConfig sample;
  std::string prompt, prompts_file, gen_out, data, eval_text, tok_text, tok_file;
  int64_t gen_batch = 8, eval_batches = 0;
  bool print_ids = false, tok_json = false;

  void add_generate(CLI::App& app, Common& c) {
    generate = app.add_subcommand("generate", "sample text from a checkpoint (KV cache)");
    generate->add_option("--ckpt", c.ckpt, "checkpoint directory")->required();
    CLI::Option* prompt_opt = generate->add_option("--prompt", prompt, "text to continue");
    CLI::Option* prompts_opt =
        generate
            ->add_option("--prompts", prompts_file,
                         "or a file of prompts, one per line or JSON Lines {\"id\", \"prompt\", "
                         "\"seed\"}; the processes share them (data-parallel)")
            ->excludes(prompt_opt);
    generate->add_option("--out", gen_out, "with --prompts: the results, one JSON line per prompt")
        ->needs(prompts_opt);
    generate->add_option("--batch", gen_batch, "with --prompts: prompts generated together")
        ->check(whole_at_least(1))
        ->needs(prompts_opt);
    generate->add_option("--temperature", sample.temperature, "0 = greedy")
        ->check(finite_in(0, 1e6));
    generate->add_option("--top-p", sample.top_p, "nucleus sampling mass")
        ->check(finite_in(1e-9, 1));
    generate->add_option("--seed", sample.seed, "sampling seed");
    generate->add_option("--max-tokens", sample.max_tokens, "tokens to generate at most")
        ->check(whole_at_least(1));
    generate->add_option("--tp", c.tp, "tensor-parallel ranks (= processes under mpirun)")
        ->check(whole_at_least(1));
    c.add_timeout(generate);
    generate->add_flag("--force", c.force, "with --prompts: overwrite --out if it exists")
        ->needs(prompts_opt);
    generate->add_flag("--ids", print_ids, "also print the generated token ids (a JSON array)")
        ->excludes(prompts_opt);
  }
  void add(CLI::App& app, Common& c) {
    add_generate(app, c);
    eval = app.add_subcommand("eval", "loss and perplexity of a checkpoint on a token file");
    eval->add_option("--ckpt", c.ckpt, "checkpoint directory")->required();
    CLI::Option* data_opt = eval->add_option("--data", data, "token shard (e.g. data/kjv/val.bin)");
    eval->add_option("--text", eval_text,
                     "or a UTF-8 text file, tokenized as prepare does (<s> before each line)")
        ->excludes(data_opt);
    c.add_timeout(eval);
    eval->add_option("--batches", eval_batches, "evaluate at most this many batches (0 = all)")
        ->check(whole_at_least(0));
    eval->add_option("--tp", c.tp,
                     "tensor-parallel ranks; the processes / tp replicas share the batches")
        ->check(whole_at_least(1));
    tokenize = app.add_subcommand(
        "tokenize",
        "the token ids of each line of a text file (JSON), under a checkpoint's tokenizer");
    CLI::Option* ckpt_opt = tokenize->add_option("--ckpt", c.ckpt, "checkpoint directory");
    tokenize->add_option("--tokenizer", tok_file, "a tokenizer.model or tokenizer.json instead")
        ->excludes(ckpt_opt);
    tokenize->add_option("--text", tok_text, "UTF-8 text file (one document per non-blank line)")
        ->required();
    tokenize->add_flag("--json", tok_json,
                       "--text is a JSON array of strings, each tokenized whole (newlines and "
                       "all)");
  }
  int run(const CLI::App* sub, Common& c, comm::Group& world) {
    if (sub != generate && sub != eval && sub != tokenize) return -1;
    // --ckpt may name a run directory: its latest checkpoint.
    std::string& ckpt = c.ckpt;
    if (!ckpt.empty() && !std::filesystem::exists(std::filesystem::path(ckpt) / "trainer.json"))
      if (const std::string latest = latest_checkpoint(ckpt); !latest.empty()) ckpt = latest;
    const int tp = std::max(c.tp, 1);
    if (sub == generate && !prompts_file.empty())
      return run_generate_many(ckpt, prompts_file, gen_out, sample, gen_batch, world, tp, c.force);
    if (sub == generate && prompt.empty())
      throw Error("generate needs --prompt TEXT or --prompts FILE");
    if (sub == generate) return run_generate(ckpt, prompt, sample, world, tp, print_ids);
    if (sub == eval && data.empty() && eval_text.empty())
      throw Error("eval needs --data SHARD or --text FILE");
    if (sub == eval) return run_eval(ckpt, data, eval_text, eval_batches, world, tp);
    return run_tokenize(ckpt, tok_file, tok_text, tok_json);
  }
};

// prepare, convert, plot, settings, report: files in, files out.
struct FileCommands {
  CLI::App *prepare = nullptr, *convert = nullptr, *plot = nullptr, *settings = nullptr,
           *report = nullptr;
  PrepareOptions prep;
  std::string conv_from, conv_to, conv_dtype, trace_json, trace_svg, report_out;
  double shard_mb = 5000, peak_gflops = 0;
  bool allow_overflow = false;

  void add_prepare(CLI::App& app) {
    prepare = app.add_subcommand("prepare", "train a BPE tokenizer and write token shards");
    prepare->add_option("--text", prep.texts, "UTF-8 text files (one document per line)")
        ->required();
    prepare->add_option("--vocab", prep.vocab_size, "vocabulary size of the tokenizer to train");
    prepare->add_option("--out", prep.out_dir, "output directory")->required();
    prepare->add_option("--tokenizer", prep.tokenizer,
                        "reuse this tokenizer: a sentencepiece tokenizer.model, or a byte-level "
                        "BPE tokenizer.json (Llama 3's; its tokenizer_config.json beside it)");
    prepare->add_option("--val-fraction", prep.val_fraction,
                        "share of the text held out for validation");
  }
  void add_convert(CLI::App& app, Common& c) {
    convert = app.add_subcommand(
        "convert",
        "convert a Hugging Face Llama directory (hf:DIR) to a checkpoint, or back; or a "
        "checkpoint to gguf:FILE (llama.cpp)");
    convert->add_option("--from", conv_from, "hf:DIR, or a checkpoint (or run) directory")
        ->required();
    convert->add_option("--to", conv_to, "a checkpoint directory, hf:DIR, or gguf:FILE")
        ->required();
    convert->add_option("--dtype", conv_dtype,
                        "tensor type of hf:DIR output: f32, bf16 or f16 (default: the type "
                        "the model was converted from, else f32); of gguf:FILE: f32, f16 "
                        "(default) or q8_0");
    convert->add_flag("--allow-overflow", allow_overflow,
                      "fp16 output (--dtype f16; gguf:FILE's default): clamp values beyond "
                      "fp16's range (|x| >= 65520, which would become inf) to ±65504 instead "
                      "of refusing the conversion");
    convert->add_option("--shard-mb", shard_mb, "largest weight file of hf:DIR output, MB")
        ->check(finite_in(1e-6, 1e15))
        ->group("");  // hidden: tests split small models
    convert->add_flag("--force", c.force, "overwrite an existing gguf:FILE");
  }
  void add(CLI::App& app, Common& c) {  // after prepare: convert, plot, settings, report
    add_convert(app, c);
    plot = app.add_subcommand(
        "plot", "draw RUN_DIR/loss.svg (and pipeline.svg from pipeline_trace.json), or one trace");
    CLI::Option* run_dir_opt = plot->add_option("run_dir", c.run_dir, "training run directory");
    CLI::Option* trace_opt =
        plot->add_option("--trace", trace_json, "draw this Chrome trace JSON as a timeline")
            ->excludes(run_dir_opt);
    plot->add_option("--out", trace_svg, "SVG for --trace (default: the trace's name, .svg)")
        ->needs(trace_opt);
    plot->add_flag("--force", c.force, "with --trace: overwrite the SVG if it exists")
        ->needs(trace_opt);
    settings = app.add_subcommand(
        "settings", "print every configuration setting: type, default and meaning (Markdown)");
    report = app.add_subcommand(
        "report", "write RUN_DIR/report.html: a run's charts, ranks and configuration in one page");
    report->add_option("run_dir", c.run_dir, "training run directory")->required();
    report->add_option("--out", report_out, "the HTML file (default RUN_DIR/report.html)");
    report
        ->add_option("--peak-gflops", peak_gflops,
                     "GEMM peak of the run's machines, GFLOP/s summed over its ranks, for MFU "
                     "(default: the peak the run measured, with --report-every)")
        ->check(finite_in(1e-6, 1e15));
    report->add_flag("--force", c.force, "overwrite --out if it exists");
  }
  int run(const CLI::App* sub, Common& c, comm::Group& world) {
    if (sub == prepare) return parallama::prepare(prep), 0;
    if (sub == convert) {
      if (world.size() > 1) throw Error("convert runs in one process (start it without mpirun)");
      return run_convert(conv_from, conv_to, conv_dtype, shard_mb, allow_overflow, c.force);
    }
    if (sub == settings) return run_settings();
    if (sub == report) {
      if (world.size() > 1) throw Error("report runs in one process (start it without mpirun)");
      if (!report_out.empty())
        check_output_file("--out", report_out, {c.run_dir + "/metrics.jsonl"}, c.force);
      std::printf("wrote %s\n", write_report(c.run_dir, report_out, peak_gflops).c_str());
      return 0;
    }
    if (sub != plot) return -1;
    if (!trace_json.empty()) {  // the SVG is checked before the trace is read
      if (trace_svg.empty())
        trace_svg = std::filesystem::path(trace_json).replace_extension(".svg").string();
      check_output_file("--out", trace_svg, {trace_json}, c.force);
    }
    const auto written = trace_json.empty() ? plot_run(c.run_dir)
                                            : std::vector{plot_timeline(trace_json, trace_svg)};
    for (const std::string& path : written) std::printf("wrote %s\n", path.c_str());
    return 0;
  }
};

// A parse error as one line naming the subcommand's help; help itself as CLI11 prints it.
int parse(CLI::App& app, int argc, char** argv, comm::Group& world) {
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
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  take_signals_on_a_thread();  // before any other thread: see train/preempt.h
  // Under an MPI launcher every process joins the world group; otherwise the group of one.
  // Collectives there allocate and free scratch blocks every step: keep them (tensor/heap.h).
  if (comm::launched()) retain_freed_memory();
  comm::Group world = comm::launched() ? comm::world() : comm::Group();
  world.set_name("world");  // a timeout names the group: "world barrier #7 did not complete"
  if (world.rank() != 0 && !std::freopen("/dev/null", "w", stdout)) return 3;  // rank 0 reports
  CLI::App app{"parallama: train LLaMA-family language models"};
  app.require_subcommand(1);
  Common common;
  FileCommands files;
  RunCommands runs;
  InferCommands infer;
  LaunchCommand launcher;
  files.add_prepare(app);  // in the order `parallama --help` lists them
  runs.add(app, common);
  infer.add(app, common);
  files.add(app, common);
  launcher.add(app);
  FinetuneCommands* finetune_cmds = add_finetune_commands(app);
  for (CLI::App* sub : finetune_subcommands(finetune_cmds)) common.add_timeout(sub);
  if (const int rc = parse(app, argc, argv, world); rc >= 0) return rc;
  try {
    CLI::App* sub = app.get_subcommands().front();
    world.set_options({false, common.timeout_s});  // train, bench: parallel.timeout_s, set later
    if (const int rc = files.run(sub, common, world); rc >= 0) return rc;
    if (const int rc = run_finetune_commands(finetune_cmds, sub, world); rc >= 0) return rc;
    if (const int rc = infer.run(sub, common, world); rc >= 0) return rc;
    if (const int rc = runs.run(sub, common, world); rc >= 0) return rc;
    if (const int rc = launcher.run(sub); rc >= 0) return rc;
  } catch (const comm::PeerLost& e) {
    // Some process cannot be reached: say so now and end the job (no gathering of the others'
    // failures, which would wait for the ones that cannot answer).
    std::fprintf(stderr, "error: %s\n", e.what());
    if (world.size() > 1) comm::abort_job(2);
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
