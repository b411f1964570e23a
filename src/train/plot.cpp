#include "train/plot.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <vector>

#include "tensor/error.h"

namespace parallama {

namespace {

struct Series {
  std::vector<double> x, y;
};

std::string polyline(const Series& s, double x0, double x1, double y0, double y1,
                     const char* color) {
  std::string pts;
  char buf[64];
  for (size_t i = 0; i < s.x.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%.1f,%.1f ", 70 + 680 * (s.x[i] - x0) / (x1 - x0),
                  430 - 400 * (s.y[i] - y0) / (y1 - y0));
    pts += buf;
  }
  return "<polyline fill=\"none\" stroke=\"" + std::string(color) +
         "\" stroke-width=\"1.5\" points=\"" + pts + "\"/>\n";
}

}  // namespace

std::string plot_losses(const std::string& run_dir) {
  const std::string in_path = run_dir + "/metrics.jsonl";
  std::ifstream in(in_path);
  if (!in)
    throw Error("cannot read " + in_path + " (is '" + run_dir + "' a training run directory?)");
  Series train, val;
  for (std::string line; std::getline(in, line);) {
    try {
      const auto j = nlohmann::json::parse(line);
      const double step = j.at("step").get<double>();
      train.x.push_back(step), train.y.push_back(j.at("loss").get<double>());
      if (j.contains("val_loss"))
        val.x.push_back(step), val.y.push_back(j["val_loss"].get<double>());
    } catch (const nlohmann::json::exception&) {
      throw Error(in_path + ": not a metrics line: " + line.substr(0, 80));
    }
  }
  if (train.x.empty()) throw Error(in_path + ": no steps recorded yet");
  double x0 = train.x.front(), x1 = std::max(train.x.back(), x0 + 1);
  double y0 = *std::min_element(train.y.begin(), train.y.end()),
         y1 = *std::max_element(train.y.begin(), train.y.end());
  for (double v : val.y) y0 = std::min(y0, v), y1 = std::max(y1, v);
  y0 = std::floor(y0), y1 = std::max(std::ceil(y1), y0 + 1);

  std::string svg =
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"480\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"800\" height=\"480\" fill=\"white\"/>\n"
      "<line x1=\"70\" y1=\"430\" x2=\"750\" y2=\"430\" stroke=\"black\"/>\n"
      "<line x1=\"70\" y1=\"30\" x2=\"70\" y2=\"430\" stroke=\"black\"/>\n";
  char buf[256];
  for (int i = 0; i <= 5; ++i) {
    const double yv = y0 + (y1 - y0) * i / 5, xv = x0 + (x1 - x0) * i / 5;
    const double py = 430 - 80.0 * i, px = 70 + 136.0 * i;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"70\" y1=\"%.0f\" x2=\"750\" y2=\"%.0f\" stroke=\"#ddd\"/><text "
                  "x=\"62\" y=\"%.0f\" text-anchor=\"end\">%.2f</text>\n"
                  "<text x=\"%.0f\" y=\"448\" text-anchor=\"middle\">%.0f</text>\n",
                  py, py, py + 4, yv, px, xv);
    svg += buf;
  }
  svg += polyline(train, x0, x1, y0, y1, "#1f77b4");
  if (!val.x.empty()) svg += polyline(val, x0, x1, y0, y1, "#d62728");
  for (size_t i = 0; i < val.x.size(); ++i) {
    std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n",
                  70 + 680 * (val.x[i] - x0) / (x1 - x0), 430 - 400 * (val.y[i] - y0) / (y1 - y0));
    svg += buf;
  }
  svg +=
      "<text x=\"410\" y=\"470\" text-anchor=\"middle\">step</text>\n"
      "<text x=\"20\" y=\"230\" text-anchor=\"middle\" transform=\"rotate(-90 20 "
      "230)\">loss</text>\n"
      "<text x=\"600\" y=\"50\" fill=\"#1f77b4\">train loss</text>\n"
      "<text x=\"600\" y=\"68\" fill=\"#d62728\">validation loss</text>\n</svg>\n";
  const std::string out = run_dir + "/loss.svg";
  std::ofstream(out) << svg;
  return out;
}

}  // namespace parallama
