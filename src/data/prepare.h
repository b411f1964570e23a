#pragma once
// `parallama prepare`: text files → tokenizer.model, train.bin, val.bin, meta.json.
#include <string>
#include <vector>

namespace parallama {

struct PrepareOptions {
  std::vector<std::string> texts;  // UTF-8 text files; each non-empty line is one document
  int vocab_size = 4096;
  std::string out_dir;
  std::string tokenizer;  // reuse this model instead of training one
  double val_fraction = 0.05;
};

// Deterministic: the same inputs give byte-identical outputs. Throws Error for empty or
// unreadable input.
void prepare(const PrepareOptions& opt);

}  // namespace parallama
