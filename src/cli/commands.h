#pragma once
// Subcommands of the parallama program.
#include <string>
#include <vector>

#include "comm/group.h"
#include "infer/generate.h"
#include "plan/plan.h"
#include "train/run_config.h"

namespace CLI {
class App;
}

namespace parallama {

int run_info(const RunConfig& cfg);
int run_settings();  // the table of every setting (Markdown), as docs/settings.md holds it
// `plan`: the device and the precision (fp32 | bf16) the planner assumes.
struct PlanOptions {
  Device device;
  std::string precision = "fp32";
};
int run_plan(const RunConfig& cfg, const PlanOptions& opt, bool json);
// print_ids: also print the generated ids as a JSON array, on a line of their own.
int run_generate(const std::string& ckpt, const std::string& prompt, const SampleConfig& sc,
                 comm::Group world, int tp, bool print_ids = false);
// `generate --prompts FILE --out FILE` (infer/prompts.h): the prompts in batches of `batch`,
// shared over the data-parallel replicas (processes / tp) by estimated cost; rank 0 writes one
// JSON line per prompt, in input order. Each prompt samples with its own seed (its "seed", else
// sc.seed plus its index in the file), so the output does not depend on the number of processes.
// An existing out_file is overwritten only with force.
int run_generate_many(const std::string& ckpt, const std::string& prompts_file,
                      const std::string& out_file, const SampleConfig& sc, int64_t batch,
                      comm::Group world, int tp, bool force = false);
// Under mpirun the processes of `world` share the batches (see evaluate()). The tokens are those
// of the token shard `data`, or (text non-empty) of a text file tokenized as prepare does: each
// non-blank line is <s> and the line's tokens.
int run_eval(const std::string& ckpt, const std::string& data, const std::string& text,
             int64_t max_batches, comm::Group world, int tp);
// `tokenize`: the ids of each non-blank line of a text file under a checkpoint's tokenizer (no
// <s>), one JSON array per line, and the ids <s> and </s>.
// The ids of each text under the checkpoint's tokenizer (or the tokenizer file `tokenizer`), as
// JSON on stdout, and the encoding speed on stderr. json: `text` is a JSON array of strings.
int run_tokenize(const std::string& ckpt, const std::string& tokenizer, const std::string& text,
                 bool json);
// `convert`: --from hf:DIR --to CKPT, or --from CKPT (or a run directory) --to hf:DIR with the
// tensors stored as dtype (f32 | bf16 | f16; "": the type the model was converted from, else
// f32) in files of at most shard_mb MB (1e6 bytes), or --to gguf:FILE (dtype f32 | f16 | q8_0;
// "": f16) for llama.cpp. fp16 output refuses values beyond fp16's range (before writing
// anything) unless allow_overflow, which clamps them to ±65504. An existing gguf:FILE is
// overwritten only with force. One process.
int run_convert(const std::string& from, const std::string& to, const std::string& dtype,
                double shard_mb = 5000, bool allow_overflow = false, bool force = false);

// `prepare-classify`, `finetune --task classify` and `classify` (cli/finetune.cpp): added to the
// app before parsing; run_finetune_commands runs the one that `sub` is, or returns -1.
struct FinetuneCommands;
FinetuneCommands* add_finetune_commands(CLI::App& app);
int run_finetune_commands(const FinetuneCommands* cmds, const CLI::App* sub, comm::Group world);
// The subcommands that run under mpirun (finetune, classify).
std::vector<CLI::App*> finetune_subcommands(const FinetuneCommands* cmds);

}  // namespace parallama
