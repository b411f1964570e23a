#include "finetune/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tensor/error.h"
#include "train/plot.h"

namespace parallama::finetune {

Confusion::Confusion(const std::vector<int>& truth, const std::vector<int>& predicted, int classes)
    : Confusion(classes) {
  if (truth.size() != predicted.size())
    throw Error("internal: confusion matrix of unequal truth and predictions");
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] < 0 || truth[i] >= classes || predicted[i] < 0 || predicted[i] >= classes)
      throw Error("internal: label outside the classes");
    ++counts[truth[i]][predicted[i]];
  }
}

int64_t Confusion::total() const {
  int64_t n = 0;
  for (const auto& row : counts)
    for (int64_t x : row) n += x;
  return n;
}

double Confusion::accuracy() const {
  int64_t right = 0;
  for (int k = 0; k < classes(); ++k) right += counts[k][k];
  const int64_t n = total();
  return n ? static_cast<double>(right) / static_cast<double>(n) : 0.0;
}

double Confusion::f1(int k) const {
  int64_t fp = 0, fn = 0;
  for (int j = 0; j < classes(); ++j) {
    if (j == k) continue;
    fp += counts[j][k];
    fn += counts[k][j];
  }
  const double tp = static_cast<double>(counts[k][k]);
  const double den = 2 * tp + static_cast<double>(fp + fn);
  return den > 0 ? 2 * tp / den : 0.0;
}

double Confusion::macro_f1() const {
  double sum = 0;
  int present = 0;
  for (int k = 0; k < classes(); ++k) {
    int64_t row = 0, col = 0;
    for (int j = 0; j < classes(); ++j) row += counts[k][j], col += counts[j][k];
    if (row == 0 && col == 0) continue;
    sum += f1(k);
    ++present;
  }
  return present ? sum / present : 0.0;
}

std::string confusion_text(const Confusion& c, const std::vector<std::string>& labels) {
  size_t w = 5;
  for (const auto& l : labels) w = std::max(w, l.size());
  char buf[64];
  std::string s = std::string(w + 2, ' ');
  for (int k = 0; k < c.classes(); ++k) {
    std::snprintf(buf, sizeof buf, " %6.6s", labels[k].c_str());
    s += buf;
  }
  s += "   (rows: truth, columns: predicted)\n";
  for (int k = 0; k < c.classes(); ++k) {
    s += "  " + labels[k] + std::string(w - labels[k].size(), ' ');
    for (int j = 0; j < c.classes(); ++j) {
      std::snprintf(buf, sizeof buf, " %6lld", static_cast<long long>(c.counts[k][j]));
      s += buf;
    }
    s += "\n";
  }
  return s;
}

std::string confusion_svg(const Confusion& c, const std::vector<std::string>& labels,
                          const std::string& title) {
  const int K = c.classes(), cell = 56, left = 150, top = 90;
  const int width = left + K * cell + 20, height = top + K * cell + 50;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                "font-family=\"sans-serif\" font-size=\"11\">\n"
                "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                width, height);
  std::string s = buf;
  std::snprintf(buf, sizeof buf,
                "<text x=\"10\" y=\"18\" font-size=\"13\">%s: accuracy %.4f, macro-F1 %.4f</text>\n"
                "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">predicted</text>\n",
                xml_escape(title).c_str(), c.accuracy(), c.macro_f1(), left + K * cell / 2, 36);
  s += buf;
  for (int j = 0; j < K; ++j) {
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%d\" y=\"%d\" text-anchor=\"start\" "
                  "transform=\"rotate(-35 %d %d)\">%s</text>\n",
                  left + j * cell + cell / 2, top - 6, left + j * cell + cell / 2, top - 6,
                  xml_escape(labels[j]).c_str());
    s += buf;
  }
  for (int k = 0; k < K; ++k) {
    int64_t row = 0;
    for (int j = 0; j < K; ++j) row += c.counts[k][j];
    std::snprintf(buf, sizeof buf, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n",
                  left - 6, top + k * cell + cell / 2 + 4, xml_escape(labels[k]).c_str());
    s += buf;
    for (int j = 0; j < K; ++j) {
      const double share = row ? static_cast<double>(c.counts[k][j]) / row : 0.0;
      const int shade = static_cast<int>(std::lround(255 * (1 - share)));
      std::snprintf(buf, sizeof buf,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,255)\" "
                    "stroke=\"#999\"/>\n<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" "
                    "fill=\"%s\">%lld</text>\n",
                    left + j * cell, top + k * cell, cell, cell, shade, shade,
                    left + j * cell + cell / 2, top + k * cell + cell / 2 + 4,
                    share > 0.5 ? "white" : "black", static_cast<long long>(c.counts[k][j]));
      s += buf;
    }
  }
  std::snprintf(buf, sizeof buf, "<text x=\"10\" y=\"%d\">rows: truth; columns: predicted</text>\n",
                height - 14);
  return s + buf + "</svg>\n";
}

nlohmann::json confusion_json(const Confusion& c) {
  return {{"accuracy", c.accuracy()}, {"macro_f1", c.macro_f1()}, {"confusion", c.counts}};
}

int majority_label(const std::vector<int>& labels, int classes) {
  std::vector<int64_t> n(static_cast<size_t>(classes));
  for (int l : labels) ++n.at(static_cast<size_t>(l));
  return static_cast<int>(std::max_element(n.begin(), n.end()) - n.begin());
}

NaiveBayes::NaiveBayes(int classes, int vocab, double alpha)
    : K_(classes), V_(vocab), alpha_(alpha) {
  if (K_ < 1 || V_ < 1 || !(alpha_ > 0)) throw Error("internal: naive Bayes needs K, V, α > 0");
}

void NaiveBayes::fit(const std::vector<std::vector<int32_t>>& docs,
                     const std::vector<int>& labels) {
  std::vector<double> docs_of(K_, 0.0), tokens_of(K_, 0.0);
  std::vector<std::vector<double>> count(K_, std::vector<double>(V_, 0.0));
  for (size_t i = 0; i < docs.size(); ++i) {
    const int k = labels.at(i);
    docs_of[k] += 1;
    for (int32_t t : docs[i]) {
      if (t < 0 || t >= V_) throw Error("internal: naive Bayes token outside the vocabulary");
      count[k][t] += 1, tokens_of[k] += 1;
    }
  }
  log_prior_.assign(K_, 0.0);
  log_like_.assign(K_, std::vector<double>(V_, 0.0));
  for (int k = 0; k < K_; ++k) {
    // A class without training documents is never predicted.
    log_prior_[k] =
        docs_of[k] > 0 ? std::log(docs_of[k] / static_cast<double>(docs.size())) : -INFINITY;
    const double den = tokens_of[k] + alpha_ * V_;
    for (int t = 0; t < V_; ++t) log_like_[k][t] = std::log((count[k][t] + alpha_) / den);
  }
}

std::vector<double> NaiveBayes::log_scores(const std::vector<int32_t>& doc) const {
  std::vector<double> s = log_prior_;
  for (int k = 0; k < K_; ++k)
    for (int32_t t : doc)
      if (t >= 0 && t < V_) s[k] += log_like_[k][t];
  return s;
}

int NaiveBayes::predict(const std::vector<int32_t>& doc) const {
  const auto s = log_scores(doc);
  return static_cast<int>(std::max_element(s.begin(), s.end()) - s.begin());
}

}  // namespace parallama::finetune
