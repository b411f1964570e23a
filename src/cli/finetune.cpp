// `parallama prepare-classify`, `finetune --task classify` and `classify`: a verse classifier
// fine-tuned from a pretrained checkpoint, and batch prediction with it.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "finetune/train.h"
#include "finetune/verses.h"
#include "tensor/error.h"
#include "train/run_dir.h"

namespace parallama {

struct FinetuneCommands {
  CLI::App *prepare = nullptr, *finetune = nullptr, *classify = nullptr;
  std::string prep_task, verses, prep_out;
  double test_fraction = 0.1;
  std::string task;
  finetune::FinetuneOptions opt;
  std::string ckpt, text, out;
  int batch = 16;
  bool force = false;
};

FinetuneCommands* add_finetune_commands(CLI::App& app) {
  static FinetuneCommands c;
  c.prepare = app.add_subcommand(
      "prepare-classify",
      "verse classification data from the King James Bible (bible -f gen1:1-rev22:21)");
  c.prepare->add_option("--task", c.prep_task, "testament (Old/New) or genre (eight groups)")
      ->required();
  c.prepare->add_option("--verses", c.verses, "lines such as \"Ge1:1 In the beginning ...\"")
      ->required();
  c.prepare
      ->add_option("--out", c.prep_out,
                   "output directory (train.jsonl, test.jsonl, "
                   "labels.json)")
      ->required();
  c.prepare->add_option("--test-fraction", c.test_fraction,
                        "share of the chapters held out (whole chapters, by a hash)");

  c.finetune = app.add_subcommand(
      "finetune", "fine-tune a pretrained checkpoint as a classifier (data parallel under mpirun)");
  c.finetune->add_option("--task", c.task, "classify")->required();
  c.finetune->add_option("--init", c.opt.init, "checkpoint (or run) directory from train")
      ->required();
  c.finetune->add_option("--data", c.opt.data, "directory from prepare-classify")->required();
  c.finetune->add_option("--out", c.opt.out, "output directory (results.json, classifier/)")
      ->required();
  c.finetune->add_option("--steps", c.opt.steps, "optimizer steps");
  c.finetune->add_option("--lr", c.opt.lr, "peak learning rate (warmup, then cosine to lr/10)");
  c.finetune->add_option("--batch", c.opt.batch, "examples per step over all ranks");
  c.finetune->add_option("--seq-len", c.opt.seq_len, "tokens per example (longer texts are cut)");
  c.finetune->add_option("--weight-decay", c.opt.weight_decay, "AdamW weight decay (matrices)");
  c.finetune->add_option("--seed", c.opt.seed, "data order and head initialisation");
  c.finetune->add_option("--log-every", c.opt.log_every, "steps between log lines");
  c.finetune->add_flag("--from-scratch", c.opt.from_scratch,
                       "start from random weights instead of the checkpoint's (a baseline)");
  c.finetune->add_flag("--scratch-baseline", c.opt.scratch_baseline,
                       "also train from scratch with the same settings and report both");

  c.classify = app.add_subcommand(
      "classify", "predict the label of each line of a text file (lines shared over ranks)");
  c.classify->add_option("--ckpt", c.ckpt, "classifier directory written by finetune")->required();
  c.classify->add_option("--text", c.text, "UTF-8 text file, one text per non-blank line")
      ->required();
  c.classify->add_option("--out", c.out, "JSON lines, in input order")->required();
  c.classify->add_option("--batch", c.batch, "lines per forward pass on each rank");
  c.classify->add_flag("--force", c.force, "overwrite --out if it exists");
  return &c;
}

std::vector<CLI::App*> finetune_subcommands(const FinetuneCommands* c) {
  return {c->finetune, c->classify};
}

int run_finetune_commands(const FinetuneCommands* c, const CLI::App* sub, comm::Group world) {
  if (sub == c->prepare) {
    if (world.size() > 1) throw Error("prepare-classify runs in one process (without mpirun)");
    const auto d = finetune::prepare_classify(finetune::parse_task(c->prep_task), c->verses,
                                              c->prep_out, c->test_fraction);
    std::printf("wrote %s: %zu train and %zu test verses, %zu labels (%s)\n", c->prep_out.c_str(),
                d.train.size(), d.test.size(), d.labels.size(), d.task.c_str());
    return 0;
  }
  if (sub == c->finetune) {
    if (c->task != "classify")
      throw Error("unknown finetune --task '" + c->task +
                  "' (choose classify; the label set comes from --data, see prepare-classify)");
    finetune::FinetuneOptions opt = c->opt;
    // --init may name a run directory: its latest checkpoint.
    if (!std::filesystem::exists(std::filesystem::path(opt.init) / "trainer.json"))
      if (const std::string latest = latest_checkpoint(opt.init); !latest.empty())
        opt.init = latest;
    finetune::run_finetune(opt, world);
    return 0;
  }
  if (sub == c->classify) {
    finetune::run_classify(c->ckpt, c->text, c->out, c->batch, world, c->force);
    return 0;
  }
  return -1;
}

}  // namespace parallama
