#pragma once
// Fine-tuning a classifier with data parallelism, and batch prediction.
//
// Every rank holds the whole classifier. Each step takes a global batch of `batch` training
// examples (a seeded permutation per epoch, the same on every rank); rank r takes examples
// r, r + ranks, ... of it. Each rank's gradient is that of Σ loss / batch over its examples,
// and the all-reduced sum is the gradient of the global mean, whatever the number of ranks.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/group.h"
#include "finetune/classifier.h"
#include "finetune/verses.h"

namespace parallama::finetune {

struct FinetuneOptions {
  std::string init;  // a checkpoint directory written by `parallama train`
  std::string data;  // made by prepare-classify
  std::string out;   // results.json, confusion SVGs, classifier/ (the checkpoint)
  int64_t steps = 300;
  float lr = 1e-4f;
  float weight_decay = 0.01f;
  float clip = 1.0f;
  int batch = 32;                 // examples per step over all ranks
  int seq_len = 64;               // tokens per example (<s> and the text, cut)
  uint64_t seed = 1;              // data order and head init
  bool from_scratch = false;      // random body instead of init's weights (a baseline)
  bool scratch_baseline = false;  // also train from scratch with the same settings, and report
  int64_t log_every = 25;
};

// `finetune --task classify`: trains, evaluates on the test split against the majority class
// and naive Bayes (and from scratch with scratch_baseline), prints the results, writes
// out/results.json, out/confusion-*.svg and the classifier checkpoint out/classifier.
// Returns the results written.
nlohmann::json run_finetune(const FinetuneOptions& opt, comm::Group world);

// `classify`: every non-blank line of text_file, shared over the ranks by cost, predictions
// gathered in input order into out_file as JSON lines {"line", "text", "label",
// "probabilities"}.
void run_classify(const std::string& ckpt, const std::string& text_file,
                  const std::string& out_file, int batch, comm::Group world, bool force = false);

}  // namespace parallama::finetune
