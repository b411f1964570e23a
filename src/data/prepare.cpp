#include "data/prepare.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data/shard.h"
#include "data/tokenizer.h"
#include "tensor/error.h"

namespace fs = std::filesystem;

namespace parallama {

void prepare(const PrepareOptions& opt) {
  if (opt.texts.empty()) throw Error("prepare: give at least one --text FILE");
  if (opt.out_dir.empty()) throw Error("prepare: give --out DIR");
  if (!(opt.val_fraction > 0.0 && opt.val_fraction < 1.0))
    throw Error("prepare: --val-fraction must lie strictly between 0 and 1");
  if (opt.tokenizer.empty() && (opt.vocab_size < 260 || opt.vocab_size > 1 << 20))
    throw Error("prepare: --vocab must be between 260 (256 bytes + specials) and 1048576");

  std::vector<std::string> lines;
  nlohmann::json inputs = nlohmann::json::array();
  for (const auto& path : opt.texts) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot read text file '" + path + "'");
    size_t count = 0, bytes = 0;
    for (std::string line; std::getline(in, line);) {
      bytes += line.size() + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      lines.push_back(std::move(line));
      ++count;
    }
    if (count == 0) throw Error("text file '" + path + "' is empty");
    inputs.push_back(
        {{"file", fs::path(path).filename().string()}, {"bytes", bytes}, {"lines", count}});
  }

  fs::create_directories(opt.out_dir);
  const std::string model_path = (fs::path(opt.out_dir) / "tokenizer.model").string();
  std::string model_bytes;
  if (!opt.tokenizer.empty()) {
    std::ifstream in(opt.tokenizer, std::ios::binary);
    if (!in) throw Error("cannot read tokenizer '" + opt.tokenizer + "'");
    model_bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    std::printf("training a %d-token BPE tokenizer on %zu lines\n", opt.vocab_size, lines.size());
    model_bytes = Tokenizer::train(lines, opt.vocab_size);
  }
  const bool same_file =
      !opt.tokenizer.empty() && fs::exists(model_path) && fs::equivalent(opt.tokenizer, model_path);
  if (!same_file) {
    std::ofstream(model_path + ".tmp", std::ios::binary) << model_bytes;
    fs::rename(model_path + ".tmp", model_path);
  }
  const Tokenizer tok(model_path);

  // Lines go in blocks of 64; the blocks where ⌊(i+1)·f⌋ > ⌊i·f⌋ are validation, which spreads the
  // validation set evenly over the corpus. A text too short for that gives its last block.
  const size_t block = 64, blocks = (lines.size() + block - 1) / block;
  std::vector<bool> is_val(blocks);
  bool any = false;
  for (size_t b = 0; b < blocks; ++b)
    any |= is_val[b] = std::floor((b + 1) * opt.val_fraction) > std::floor(b * opt.val_fraction);
  if (!any && blocks >= 2) is_val[blocks - 1] = true;
  std::vector<int32_t> train, val;
  for (size_t b = 0; b < blocks; ++b) {
    auto& dst = is_val[b] ? val : train;
    for (size_t i = b * block; i < std::min(lines.size(), (b + 1) * block); ++i) {
      dst.push_back(tok.bos_id());
      const auto ids = tok.encode(lines[i]);
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
  }
  if (val.empty())
    throw Error(
        "prepare: the text has fewer than 128 lines, too few to hold some out for validation");
  const uint64_t vocab = static_cast<uint64_t>(tok.vocab_size());
  write_shard((fs::path(opt.out_dir) / "train.bin").string(), train, vocab, tok.hash());
  write_shard((fs::path(opt.out_dir) / "val.bin").string(), val, vocab, tok.hash());
  // The unigram baseline: cross-entropy of the validation tokens under the training tokens'
  // frequencies (add-one smoothed), in nats. A model that learned anything beats it.
  std::vector<double> counts(vocab, 1.0);
  for (int32_t t : train) counts[t] += 1.0;
  const double total = static_cast<double>(train.size()) + static_cast<double>(vocab);
  double nll = 0.0;
  for (int32_t t : val) nll -= std::log(counts[t] / total);
  const double unigram = nll / static_cast<double>(val.size());
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(tok.hash()));
  const nlohmann::json meta = {{"vocab_size", vocab},
                               {"tokenizer_hash", hash},
                               {"train_tokens", train.size()},
                               {"val_tokens", val.size()},
                               {"val_fraction", opt.val_fraction},
                               {"unigram_val_loss", std::round(unigram * 1e6) / 1e6},
                               {"inputs", inputs}};
  std::ofstream(fs::path(opt.out_dir) / "meta.json") << meta.dump(1) << "\n";
  std::printf(
      "wrote %s: vocab %llu, %zu train tokens, %zu validation tokens; unigram baseline "
      "validation loss %.4f\n",
      opt.out_dir.c_str(), static_cast<unsigned long long>(vocab), train.size(), val.size(),
      unigram);
}

}  // namespace parallama
