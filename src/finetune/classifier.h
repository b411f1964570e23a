#pragma once
// A sequence classifier on a LLaMA body: the embedding and every layer (a ModelShard without the
// language-model head, like a first pipeline stage that holds all layers) run by the model's own
// forward_chunk / backward_chunk; then the final RMSNorm, a mean over each row's real tokens
// (padding excluded) and a linear head (K, C) with bias, and cross-entropy.
//
// The head's parameters are parameters like the body's, in the same flat buffer after them
// (classifier_layout), under the names a classifier checkpoint stores: model.norm.weight (C),
// score.weight (K, C) and score.bias (K). One optimizer, one gradient sum and one norm cover all.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/llama.h"
#include "model/params.h"
#include "train/run_config.h"

namespace parallama::finetune {

// The body: layers [0, n_layers) and the embedding, no head (and so no final norm).
ModelShard body_shard(const LlamaConfig& c);

// The body and a head of `classes` classes.
ParamLayout classifier_layout(const LlamaConfig& c, int classes);

// Where the head is in a classifier_layout buffer: norm, weight and bias, adjacent.
struct HeadLayout {
  int64_t K = 0, C = 0, base = 0;
  explicit HeadLayout(const ParamLayout& layout);
  int64_t norm() const { return base; }
  int64_t weight() const { return base + C; }
  int64_t bias() const { return base + C + K * C; }
};

// The head's parameters in params: norm ones, weight N(0, std) (seeded), bias zero.
void init_head(ParamBuffer& params, uint64_t seed, float std = 0.02f);

class Classifier {
 public:
  // B rows of T tokens per call; layout: a classifier_layout.
  Classifier(const ParamLayout& layout, int64_t B, int64_t T);
  ~Classifier();

  // tokens (B, T), padded after each row's lengths[b] real tokens (0: a row without an example);
  // labels (B); weights (B): each row's weight in the loss. Returns Σ_b weights[b]·loss_b.
  // Keeps the activations for backward() when `train`; probabilities() afterwards either way.
  double forward(const ParamBuffer& params, const int32_t* tokens, const int32_t* lengths,
                 const int32_t* labels, const float* weights, bool train);
  // grads += ∂(Σ_b weights[b]·loss_b)/∂params, for the last forward(train = true).
  // on_final(offset): every gradient at offsets >= offset is final (the head's first, then the
  // body's as Llama::backward_chunk finishes them), for a synchronizer's hook.
  void backward(const ParamBuffer& params, ParamBuffer& grads,
                const std::function<void(int64_t)>& on_final = {});
  const float* probabilities() const { return probs_.data(); }  // (B, K)
  const HeadLayout& head_layout() const { return hl_; }
  int64_t batch() const { return B_; }
  int64_t seq_len() const { return T_; }

 private:
  HeadLayout hl_;
  int64_t B_, T_, N_, C_, K_;
  float eps_;
  std::unique_ptr<Llama> llama_;
  const float* h_ = nullptr;  // (N, C) the body's output of the last forward
  std::vector<int32_t> len_, lab_;
  std::vector<float> w_, y_, rstd_, pooled_, probs_, dy_, dx_;
};

// The classifier's probabilities (K) for rows[i] of each i in `which`, batch() rows a forward:
// got(i, probabilities), in the order of `which`.
void predict(Classifier& clf, const ParamBuffer& params,
             const std::vector<std::vector<int32_t>>& rows, const std::vector<int64_t>& which,
             const std::function<void(int64_t, const float*)>& got);

// Tokens of a text as the classifier reads it: <s>, then the text's tokens, cut to T.
std::vector<int32_t> classifier_tokens(const std::vector<int32_t>& text_ids, int32_t bos,
                                       int64_t T);
// Fills row b of tokens (B, T) and lengths (B) with seq (at most T ids), padding with 0.
void put_row(int32_t* tokens, int32_t* lengths, int64_t b, int64_t T,
             const std::vector<int32_t>& seq);

// A classifier checkpoint directory: model.safetensors (the body under its Hugging Face names,
// model.norm.weight, score.weight (K, C) and score.bias (K)), classifier.json and the tokenizer's
// files. classifier.json, format 2: labels (distinct), task, sequence length, pooling, the model's
// configuration, the tokenizer's hash, model.safetensors' checksum, and a checksum of its own
// (as trainer.json's). Format 1 (unsealed) is refused: it cannot be told from a format-2 file
// stripped of its seal, so such a classifier is made again.
struct ClassifierMeta {
  std::string task;
  std::vector<std::string> labels;
  int64_t seq_len = 0;
  RunConfig cfg;
  nlohmann::json extra;  // recorded as given (init, steps, ...)
};
// Written into a temporary sibling of dir and renamed into place. One process writes. Throws
// Error before writing anything when a label repeats.
void save_classifier(const std::string& dir, const ClassifierMeta& meta, const ParamBuffer& params,
                     const std::string& tokenizer_path);
// Where a classifier checkpoint is: dir itself, or dir/classifier (a finetune output directory).
// Throws Error with one line when there is none (a language-model checkpoint, say).
std::string find_classifier(const std::string& dir);
// Reads classifier.json and checks it (its seal, every field, distinct labels) and the files it
// describes (the tokenizer's hash, model.safetensors' checksum); Error with one line otherwise.
ClassifierMeta read_classifier_meta(const std::string& ckpt_dir);
// Loads the weights into params (a classifier_layout of the checkpoint's classes).
void load_classifier_weights(const std::string& ckpt_dir, ParamBuffer& params);

}  // namespace parallama::finetune
