#pragma once
// Classification metrics (confusion matrix, accuracy, macro-F1, drawn as SVG and text) and the
// two baselines that need no model: the majority class and multinomial naive Bayes over a bag
// of token ids.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace parallama::finetune {

// counts[truth][predicted].
struct Confusion {
  std::vector<std::vector<int64_t>> counts;
  explicit Confusion(int classes = 0)
      : counts(static_cast<size_t>(classes), std::vector<int64_t>(static_cast<size_t>(classes))) {}
  Confusion(const std::vector<int>& truth, const std::vector<int>& predicted, int classes);
  int classes() const { return static_cast<int>(counts.size()); }
  int64_t total() const;
  double accuracy() const;
  // F1 of class k: 2·tp / (2·tp + fp + fn), 0 when the class is neither present nor predicted.
  double f1(int k) const;
  // The unweighted mean of the classes' F1 over the classes present in the truth or predicted.
  double macro_f1() const;
};

// The table as text: a header row of predicted labels, one row per true label.
std::string confusion_text(const Confusion& c, const std::vector<std::string>& labels);
// The table as an SVG heat map (rows: truth, columns: predicted; shade by the row's share).
std::string confusion_svg(const Confusion& c, const std::vector<std::string>& labels,
                          const std::string& title);
// {"accuracy", "macro_f1", "confusion"}.
nlohmann::json confusion_json(const Confusion& c);

// The most frequent training label (ties: the lowest).
int majority_label(const std::vector<int>& labels, int classes);

// Multinomial naive Bayes over bags of token ids, with add-alpha (Laplace) smoothing:
// log P(k) + Σ_tokens log((count(k, t) + α) / (Σ_t' count(k, t') + α·V)).
class NaiveBayes {
 public:
  NaiveBayes(int classes, int vocab, double alpha = 1.0);
  void fit(const std::vector<std::vector<int32_t>>& docs, const std::vector<int>& labels);
  std::vector<double> log_scores(const std::vector<int32_t>& doc) const;  // unnormalised
  int predict(const std::vector<int32_t>& doc) const;

 private:
  int K_, V_;
  double alpha_;
  std::vector<double> log_prior_;
  std::vector<std::vector<double>> log_like_;  // [k][t]
};

}  // namespace parallama::finetune
