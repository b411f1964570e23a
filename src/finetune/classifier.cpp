#include "finetune/classifier.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "finetune/verses.h"
#include "io/checkpoint.h"
#include "io/json_depth.h"
#include "io/param_io.h"
#include "io/paths.h"
#include "io/safetensors.h"
#include "kernels/rmsnorm.h"
#include "tensor/error.h"

namespace fs = std::filesystem;

namespace parallama::finetune {

ModelShard body_shard(const LlamaConfig& c) {
  ModelShard s = ModelShard::whole(c);
  s.has_head = false;
  return s;
}

ParamLayout classifier_layout(const LlamaConfig& c, int classes) {
  if (classes < 2) throw Error("a classifier needs at least two classes");
  const int64_t K = classes, C = c.dim;
  return ParamLayout(c, body_shard(c),
                     {{"model.norm.weight", ParamKind::Norm, {C}},
                      {"score.weight", ParamKind::Matrix, {K, C}, 0.02f},
                      {"score.bias", ParamKind::Bias, {K}}});
}

HeadLayout::HeadLayout(const ParamLayout& layout) {
  const ParamSpec& w = layout.find("score.weight");
  K = w.shape[0], C = w.shape[1], base = layout.find("model.norm.weight").offset;
  if (w.offset != weight() || layout.find("score.bias").offset != bias())
    throw Error("internal: the classifier's head is not adjacent in its layout");
}

void init_head(ParamBuffer& params, uint64_t seed, float std) {
  const HeadLayout h(params.layout());
  float* p = params.data();
  std::fill(p + h.norm(), p + h.norm() + h.C, 1.0f);
  std::fill(p + h.bias(), p + h.bias() + h.K, 0.0f);
  std::mt19937_64 rng(seed ^ 0x5c0e5c0e5c0eull);
  std::normal_distribution<float> d(0.0f, std);
  for (int64_t i = 0; i < h.K * h.C; ++i) p[h.weight() + i] = d(rng);
}

Classifier::Classifier(const ParamLayout& layout, int64_t B, int64_t T)
    : hl_(layout),
      B_(B),
      T_(T),
      N_(B * T),
      C_(layout.config().dim),
      K_(hl_.K),
      eps_(layout.config().norm_eps) {
  const ModelShard& s = layout.shard();
  if (s.has_head || !s.has_embedding || s.first_layer != 0 ||
      s.last_layer != layout.config().n_layers)
    throw Error("internal: a classifier body holds the embedding and every layer, no head");
  llama_ = std::make_unique<Llama>(layout, B, T);
  len_.resize(B_), lab_.resize(B_), w_.resize(B_);
  y_.resize(N_ * C_), rstd_.resize(N_), pooled_.resize(B_ * C_), probs_.resize(B_ * K_);
  dy_.resize(N_ * C_), dx_.resize(N_ * C_);
}

Classifier::~Classifier() = default;

double Classifier::forward(const ParamBuffer& params, const int32_t* tokens, const int32_t* lengths,
                           const int32_t* labels, const float* weights, bool train) {
  h_ = llama_->forward_chunk(params, 0, 0, tokens, tokens, nullptr);  // (N, C)
  const float* head = params.data();
  std::copy(lengths, lengths + B_, len_.begin());
  std::copy(labels, labels + B_, lab_.begin());
  std::copy(weights, weights + B_, w_.begin());
  const float* g = head + hl_.norm();
  const float* W = head + hl_.weight();   // (K, C)
  const float* bias = head + hl_.bias();  // (K)
  kernels::rmsnorm_forward(y_.data(), rstd_.data(), h_, g, N_, C_, eps_);
  double loss = 0;
  for (int64_t b = 0; b < B_; ++b) {
    float* pb = pooled_.data() + b * C_;  // (C) mean of the row's real tokens
    std::fill(pb, pb + C_, 0.0f);
    const int64_t n = std::clamp<int64_t>(len_[b], 0, T_);
    for (int64_t t = 0; t < n; ++t) {
      const float* yt = y_.data() + (b * T_ + t) * C_;
      for (int64_t c = 0; c < C_; ++c) pb[c] += yt[c];
    }
    if (n > 0)
      for (int64_t c = 0; c < C_; ++c) pb[c] /= static_cast<float>(n);
    float* p = probs_.data() + b * K_;  // (K) logits, then softmax
    float mx = -INFINITY;
    for (int64_t k = 0; k < K_; ++k) {
      float z = bias[k];
      for (int64_t c = 0; c < C_; ++c) z += W[k * C_ + c] * pb[c];
      p[k] = z, mx = std::max(mx, z);
    }
    double sum = 0;
    for (int64_t k = 0; k < K_; ++k) sum += std::exp(static_cast<double>(p[k] - mx));
    const double lse = mx + std::log(sum);
    if (n > 0 && w_[b] != 0.0f) {
      if (lab_[b] < 0 || lab_[b] >= K_) throw Error("internal: label outside the classes");
      loss += static_cast<double>(w_[b]) * (lse - p[lab_[b]]);
    }
    for (int64_t k = 0; k < K_; ++k) p[k] = static_cast<float>(std::exp(p[k] - lse));
  }
  if (!train) llama_->discard_chunk(0, 0);
  return loss;
}

void Classifier::backward(const ParamBuffer& params, ParamBuffer& grads,
                          const std::function<void(int64_t)>& on_final) {
  const float* head = params.data();
  const float* W = head + hl_.weight();
  float* dg = grads.data() + hl_.norm();
  float* dW = grads.data() + hl_.weight();
  float* dbias = grads.data() + hl_.bias();
  std::fill(dy_.begin(), dy_.end(), 0.0f);
  std::vector<float> dlogit(K_), dpooled(C_);
  for (int64_t b = 0; b < B_; ++b) {
    const int64_t n = std::clamp<int64_t>(len_[b], 0, T_);
    if (n == 0 || w_[b] == 0.0f) continue;
    const float* p = probs_.data() + b * K_;
    const float* pb = pooled_.data() + b * C_;
    for (int64_t k = 0; k < K_; ++k)  // ∂loss/∂logits = w·(softmax − one-hot)
      dlogit[k] = w_[b] * (p[k] - (k == lab_[b] ? 1.0f : 0.0f));
    std::fill(dpooled.begin(), dpooled.end(), 0.0f);
    for (int64_t k = 0; k < K_; ++k) {
      dbias[k] += dlogit[k];
      for (int64_t c = 0; c < C_; ++c) {
        dW[k * C_ + c] += dlogit[k] * pb[c];
        dpooled[c] += dlogit[k] * W[k * C_ + c];
      }
    }
    const float inv = 1.0f / static_cast<float>(n);  // the mean spreads evenly over real tokens
    for (int64_t t = 0; t < n; ++t) {
      float* dyt = dy_.data() + (b * T_ + t) * C_;
      for (int64_t c = 0; c < C_; ++c) dyt[c] = dpooled[c] * inv;
    }
  }
  kernels::rmsnorm_backward(dx_.data(), dg, dy_.data(), h_, head + hl_.norm(), rstd_.data(), N_,
                            C_);
  if (on_final) on_final(hl_.norm());  // the head (after the body in the layout) is complete
  llama_->backward_chunk(params, grads, 0, 0, 1.0f, dx_.data(), on_final);
  h_ = nullptr;
}

std::vector<int32_t> classifier_tokens(const std::vector<int32_t>& text_ids, int32_t bos,
                                       int64_t T) {
  std::vector<int32_t> s = {bos};
  s.insert(s.end(), text_ids.begin(), text_ids.end());
  if (static_cast<int64_t>(s.size()) > T) s.resize(static_cast<size_t>(T));
  return s;
}

void put_row(int32_t* tokens, int32_t* lengths, int64_t b, int64_t T,
             const std::vector<int32_t>& seq) {
  const int64_t n = std::min<int64_t>(T, static_cast<int64_t>(seq.size()));
  std::fill(tokens + b * T, tokens + (b + 1) * T, 0);
  std::copy(seq.begin(), seq.begin() + n, tokens + b * T);
  lengths[b] = static_cast<int32_t>(n);
}

void predict(Classifier& clf, const ParamBuffer& params,
             const std::vector<std::vector<int32_t>>& rows, const std::vector<int64_t>& which,
             const std::function<void(int64_t, const float*)>& got) {
  const int64_t B = clf.batch(), T = clf.seq_len(), K = clf.head_layout().K;
  std::vector<int32_t> tokens(B * T), lengths(B), labels(B, 0);
  std::vector<float> weights(B, 0.0f);
  for (size_t at = 0; at < which.size(); at += static_cast<size_t>(B)) {
    const int64_t count = std::min<int64_t>(B, static_cast<int64_t>(which.size() - at));
    std::fill(lengths.begin(), lengths.end(), 0);
    for (int64_t b = 0; b < count; ++b)
      put_row(tokens.data(), lengths.data(), b, T, rows[which[at + b]]);
    clf.forward(params, tokens.data(), lengths.data(), labels.data(), weights.data(), false);
    for (int64_t b = 0; b < count; ++b) got(which[at + b], clf.probabilities() + b * K);
  }
}

// --- Checkpoints.

namespace {

constexpr int kClassifierFormat = 2;  // 2: sealed, with the tokenizer's hash and the weights' sum

}  // namespace

void save_classifier(const std::string& dir, const ClassifierMeta& meta, const ParamBuffer& params,
                     const std::string& tokenizer_path) {
  if (HeadLayout(params.layout()).K != static_cast<int64_t>(meta.labels.size()))
    throw Error("internal: the classifier's head and its labels differ in number");
  check_distinct_labels(meta.labels, dir);
  write_dir_atomically(dir, [&](const fs::path& tmp) {
    io::SafeTensorsWriter w;  // the body under its Hugging Face names, then the head
    params.visit([&](const ParamSpec& s, const float* p) { w.add(s.name, p, s.shape); });
    w.set_metadata({{"format", "pt"}, {"parallama", "classifier"}});
    w.write((tmp / "model.safetensors").string());
    nlohmann::json j = meta.extra.is_object() ? meta.extra : nlohmann::json::object();
    j["format"] = kClassifierFormat;
    j["task"] = meta.task;
    j["labels"] = meta.labels;
    j["seq_len"] = meta.seq_len;
    j["pooling"] = "mean of the final norm's output over the real tokens";
    j["config"] = config_to_json(meta.cfg);
    copy_tokenizer(tokenizer_path, tmp.string());
    j["tokenizer_hash"] = tokenizer_hash(tokenizer_in(tmp.string(), "classifier"));
    j["checksums"]["model.safetensors"] = file_checksum((tmp / "model.safetensors").string());
    seal_json(j);
    write_file_checked((tmp / "classifier.json").string(), j.dump(1) + "\n");
  });
}

std::string find_classifier(const std::string& dir) {
  if (fs::exists(fs::path(dir) / "classifier.json")) return dir;
  const fs::path sub = fs::path(dir) / "classifier";
  if (fs::exists(sub / "classifier.json")) return sub.string();
  if (!fs::is_directory(dir)) throw Error(dir + ": no such checkpoint directory");
  if (fs::exists(fs::path(dir) / "trainer.json") || fs::exists(fs::path(dir) / "latest"))
    throw Error(dir +
                " is a language-model checkpoint without a classification head; make a classifier "
                "with parallama finetune --task classify --init " +
                dir + " --data DIR --out OUT, then classify --ckpt OUT");
  throw Error(dir +
              " has no classification head (no classifier.json); make one with parallama "
              "finetune --task classify");
}

ClassifierMeta read_classifier_meta(const std::string& ckpt_dir) {
  const std::string path = (fs::path(ckpt_dir) / "classifier.json").string();
  if (!fs::exists(path)) throw Error("cannot read " + path);
  std::ifstream in = open_input(path, "classifier file", kMaxConfigBytes);
  nlohmann::json j;
  try {
    j = parse_json_bounded(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(),
                           16);  // classifier.json nests 3 deep (config.model.dim)
  } catch (const std::exception&) {
    throw Error(path + ": not JSON");
  }
  auto need = [&](const char* key, bool ok) {
    if (!j.is_object() || !j.contains(key) || !ok)
      throw Error(path + ": missing or malformed \"" + key + "\"");
  };
  need("format", j.contains("format") && j["format"].is_number_integer());
  if (j["format"] == 1)  // unsealed: not to be told from a sealed file stripped of its seal
    throw Error(path +
                ": classifier format 1 (older, unsealed) is no longer read; make the "
                "classifier again with parallama finetune --task classify");
  if (j["format"] != kClassifierFormat)
    throw Error(path + ": classifier format " + j["format"].dump() +
                " is not supported (this parallama reads format " +
                std::to_string(kClassifierFormat) + ")");
  check_json_seal(j, path);
  need("tokenizer_hash", j.contains("tokenizer_hash") && j["tokenizer_hash"].is_number_unsigned());
  need("checksums", j.contains("checksums") && j["checksums"].is_object() &&
                        j["checksums"].contains("model.safetensors") &&
                        j["checksums"]["model.safetensors"].is_string());
  need("labels", j.contains("labels") && j["labels"].is_array() && j["labels"].size() >= 2);
  need("seq_len", j.contains("seq_len") && j["seq_len"].is_number_integer());
  need("config", j.contains("config") && j["config"].is_object());
  ClassifierMeta m;
  for (const auto& l : j["labels"]) {
    if (!l.is_string()) throw Error(path + ": labels must be strings");
    m.labels.push_back(l.get<std::string>());
  }
  check_distinct_labels(m.labels, path);
  m.task = j.value("task", "");
  m.seq_len = j["seq_len"].get<int64_t>();
  m.cfg = config_from_json(j["config"], path);
  if (m.seq_len < 1 || m.seq_len > m.cfg.model.max_seq_len)
    throw Error(path + ": seq_len " + std::to_string(m.seq_len) + " outside the model's 1.." +
                std::to_string(m.cfg.model.max_seq_len));
  m.extra = j;
  // The files beside it: the tokenizer it was trained with, the weights it was saved with.
  check_tokenizer_hash(tokenizer_in(ckpt_dir, "classifier"), j["tokenizer_hash"].get<uint64_t>(),
                       ckpt_dir);
  const std::string weights = (fs::path(ckpt_dir) / "model.safetensors").string();
  const std::string want = j["checksums"]["model.safetensors"].get<std::string>();
  if (const std::string got = file_checksum(weights); got != want)
    throw Error(weights + ": checksum " + got + " does not match classifier.json (" + want +
                "); the file is corrupt or truncated");
  return m;
}

void load_classifier_weights(const std::string& ckpt_dir, ParamBuffer& params) {
  const std::string path = (fs::path(ckpt_dir) / "model.safetensors").string();
  const io::SafeTensorsReader r(path);
  if (!r.has("score.weight"))
    throw Error(path + " holds no score.weight: not a classifier checkpoint");
  io::read_params(r, params);  // every tensor by name, the head's included
}

}  // namespace parallama::finetune
