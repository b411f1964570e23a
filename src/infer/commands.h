#pragma once
// `parallama generate`, `eval` and `tokenize`: a checkpoint's model used.
#include <string>

#include <cstdint>

#include "comm/group.h"
#include "infer/generate.h"

namespace parallama {

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

}  // namespace parallama
