#pragma once
// `parallama prepare`: text files → the tokenizer's files (tokenizer.model, or tokenizer.json
// and tokenizer_config.json), train.bin, val.bin, meta.json.
#include <cstdint>
#include <string>
#include <vector>

namespace parallama {

struct PrepareOptions {
  std::vector<std::string> texts;  // UTF-8 text files; each non-empty line is one document
  int vocab_size = 4096;
  std::string out_dir;
  std::string tokenizer;  // reuse this tokenizer (.model or .json) instead of training one
  double val_fraction = 0.05;
};

// Deterministic: the same inputs give byte-identical outputs. The four files are one set: they are
// written to a temporary sibling of out_dir (".NAME.tmp-PID"), which then takes out_dir's place
// (other files in out_dir stay); on any failure out_dir keeps its old set, and the temporary
// directories of a prepare that was killed are removed by the next one. Throws Error, before
// anything is written, for empty, unreadable or binary (not UTF-8, or NUL bytes) text, a
// directory given as a text, a tokenizer that is neither a sentencepiece model nor a
// byte-level BPE tokenizer.json, or a vocabulary size
// the text cannot give.
void prepare(const PrepareOptions& opt);

// The documents of one text file as prepare reads them: its non-blank lines, without line ends
// (a trailing carriage return and a leading byte-order mark dropped). Throws Error as prepare does
// (a file without text too, unless allow_empty). line_numbers, when given, gets each line's
// 1-based number in the file.
std::vector<std::string> read_text_lines(const std::string& path,
                                         std::vector<int64_t>* line_numbers = nullptr,
                                         bool allow_empty = false);

}  // namespace parallama
