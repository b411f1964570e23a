#include "train/plot.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include "io/checkpoint.h"
#include "io/paths.h"
#include "tensor/error.h"
#include "train/trace.h"

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

[[noreturn]] void cannot_write(const std::string& path, int err) {
  throw Error("cannot write " + path + ": " + (err ? std::strerror(err) : "the write failed"));
}

}  // namespace

void write_replacing(const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::exists(st) && !fs::is_regular_file(st)) {
    write_file_checked(path, text, path);
    return;
  }
  fs::path target = path;
  for (int hops = 0; hops < 40 && fs::is_symlink(fs::symlink_status(target, ec)); ++hops) {
    const fs::path to = fs::read_symlink(target, ec);
    if (ec) break;
    target = to.is_absolute() ? to : target.parent_path() / to;
  }
  const fs::path tmp = target.parent_path() / ("." + target.filename().string() + ".tmp-" +
                                               std::to_string(static_cast<long>(::getpid())));
  try {
    write_file_checked(tmp.string(), text, path);
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  if (std::rename(tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    fs::remove(tmp, ec);
    cannot_write(path, err);
  }
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

MetricsLines read_metrics(const std::string& run_dir) {
  const std::string in_path = run_dir + "/metrics.jsonl";
  if (!std::filesystem::exists(in_path))
    throw Error("cannot read " + in_path + " (is '" + run_dir + "' a training run directory?)");
  std::ifstream in = open_input(in_path, "metrics file", kMaxMetricsBytes);
  MetricsLines out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    const std::string where = in_path + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      if (in.peek() == std::char_traits<char>::eof()) {  // the last line, cut short by a crash
        out.torn = where + ": the last line is incomplete (a write cut short); skipped";
        break;
      }
      throw Error(where + ": not a metrics line: " + line.substr(0, 80));
    }
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number() || !j.contains("loss") ||
        !j["loss"].is_number() || (j.contains("val_loss") && !j["val_loss"].is_number()))
      throw Error(where + ": not a metrics line: " + line.substr(0, 80));
    out.steps.push_back(std::move(j));
  }
  if (out.steps.empty())
    throw Error(in_path + ": no steps recorded yet" +
                (out.torn.empty() ? "" : " (" + out.torn + ")"));
  return out;
}

std::string plot_losses(const std::string& run_dir) {
  const MetricsLines metrics = read_metrics(run_dir);
  if (!metrics.torn.empty()) std::fprintf(stderr, "warning: %s\n", metrics.torn.c_str());
  Series train, val;
  for (const nlohmann::json& j : metrics.steps) {
    const double step = j["step"].get<double>();
    train.x.push_back(step), train.y.push_back(j["loss"].get<double>());
    if (j.contains("val_loss")) val.x.push_back(step), val.y.push_back(j["val_loss"].get<double>());
  }
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
  write_replacing(out, svg);
  return out;
}

namespace {

struct KindStyle {
  const char* kind;
  const char* color;
  const char* label;
};
// Compute in strong colours, transfers in softer ones, waiting in grey.
constexpr KindStyle kStyles[] = {{"forward", "#4c78a8", "forward"},
                                 {"backward", "#f58518", "backward"},
                                 {"send", "#54a24b", "send"},
                                 {"recv", "#b279a2", "receive"},
                                 {"idle", "#d0d0d0", "idle"}};
constexpr const char* kOtherColor = "#8c8c8c";

const char* color_of(const std::string& kind) {
  for (const KindStyle& k : kStyles)
    if (kind == k.kind) return k.color;
  return kOtherColor;
}
bool is_compute(const std::string& kind) {
  return kind == "forward" || kind == "backward";
}
bool is_known(const std::string& kind) {
  const auto& kinds = trace_kinds();
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}
// Sends and receives have thin lanes of their own under the compute bar (they overlap it).
int lane_of(const std::string& kind) {
  return kind == "send" ? 1 : kind == "recv" ? 2 : 0;
}
// Waiting is drawn first, so that anything drawn over it stays visible.
int layer_of(const std::string& kind) {
  return kind == "idle" ? 0 : is_compute(kind) ? 2 : 1;
}

// A tick spacing of 1, 2 or 5 times a power of ten giving about `target` ticks over `span`.
double nice_step(double span, int target) {
  const double raw = span / target, mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

}  // namespace

std::string timeline_svg(const std::string& trace_json) {
  const std::vector<TraceEvent> events = read_chrome_trace(trace_json);
  if (events.empty()) throw Error(trace_json + ": no complete (\"ph\": \"X\") events to draw");
  int stages = 0;
  double t0 = std::numeric_limits<double>::infinity(), t1 = -t0;
  std::vector<double> compute;  // per stage: seconds in forward and backward
  bool other = false;
  for (const TraceEvent& e : events) {
    stages = std::max(stages, e.rank + 1);
    t0 = std::min(t0, e.start_s), t1 = std::max(t1, e.end_s);
    compute.resize(stages, 0.0);
    if (is_compute(e.kind)) compute[e.rank] += e.end_s - e.start_s;
    other = other || !is_known(e.kind);
  }
  const double span = t1 > t0 ? t1 - t0 : 1e-6;
  const double scale = span >= 1 ? 1 : span >= 1e-3 ? 1e3 : 1e6;
  const char* unit = span >= 1 ? "s" : span >= 1e-3 ? "ms" : "\u00b5s";
  double total = 0;
  for (double c : compute) total += c;

  // Layout: stage labels on the left, rows of `row_h`, the time axis under the rows.
  const double width = 1000, left = 100, plot_w = width - left - 20, top = 64, row_h = 36;
  const double axis_y = top + stages * row_h + 4, height = axis_y + 46;
  auto x_of = [&](double t) { return left + plot_w * (t - t0) / span; };
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n"
                "<rect class=\"background\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n"
                "<text x=\"%.0f\" y=\"20\" font-size=\"14\">pipeline: %d stage%s, %.3f %s; "
                "computing %.1f%% of the time, bubble %.1f%%</text>\n",
                width, height, width, height, left, stages, stages == 1 ? "" : "s", span * scale,
                unit, 100 * total / (stages * span), 100 - 100 * total / (stages * span));
  std::string svg = buf;

  // Legend: every kind a pipeline trace has, and "other" for anything else in the file.
  double lx = left;
  for (const KindStyle& k : kStyles) {
    std::snprintf(buf, sizeof buf,
                  "<rect class=\"legend\" x=\"%.0f\" y=\"32\" width=\"12\" height=\"12\" "
                  "fill=\"%s\"/><text x=\"%.0f\" y=\"42\">%s</text>\n",
                  lx, k.color, lx + 16, k.label);
    svg += buf;
    lx += 24 + 7.0 * std::strlen(k.label);
  }
  if (other) {
    std::snprintf(buf, sizeof buf,
                  "<rect class=\"legend\" x=\"%.0f\" y=\"32\" width=\"12\" height=\"12\" "
                  "fill=\"%s\"/><text x=\"%.0f\" y=\"42\">other</text>\n",
                  lx, kOtherColor, lx + 16);
    svg += buf;
  }

  // Row backgrounds and labels, then grid lines and the axis.
  for (int r = 0; r < stages; ++r) {
    const double y = top + r * row_h;
    std::snprintf(buf, sizeof buf,
                  "<rect class=\"row\" x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" "
                  "fill=\"%s\"/>\n<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">stage %d</text>"
                  "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" font-size=\"10\" "
                  "fill=\"#666\">%.0f%% busy</text>\n",
                  left, y, plot_w, row_h, r % 2 ? "#f4f4f4" : "#fbfbfb", left - 8, y + 16, r,
                  left - 8, y + 29, 100 * compute[r] / span);
    svg += buf;
  }
  const double step = nice_step(span * scale, 8);
  for (int i = 0; i * step <= span * scale * (1 + 1e-9); ++i) {
    const double px = x_of(t0 + i * step / scale);
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#e4e4e4\"/>"
                  "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n",
                  px, top, px, axis_y + 4, px, axis_y + 18, i * step);
    svg += buf;
  }
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n"
                "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">time (%s)</text>\n",
                left, axis_y, left + plot_w, axis_y, left + plot_w / 2, axis_y + 38, unit);
  svg += buf;

  // One group per stage, one bar per event, with the event as its tooltip.
  std::vector<std::vector<const TraceEvent*>> rows(stages);
  for (const TraceEvent& e : events) rows[e.rank].push_back(&e);
  for (int r = 0; r < stages; ++r) {
    std::stable_sort(rows[r].begin(), rows[r].end(), [](const TraceEvent* a, const TraceEvent* b) {
      return std::make_pair(layer_of(a->kind), a->start_s) <
             std::make_pair(layer_of(b->kind), b->start_s);
    });
    svg += "<g class=\"stage\" data-stage=\"" + std::to_string(r) + "\">\n";
    for (const TraceEvent* e : rows[r]) {
      const int lane = lane_of(e->kind);
      const double y = top + r * row_h + (lane == 0 ? 3 : lane == 1 ? 25 : 30);
      const double h = lane == 0 ? 20 : 4, x = x_of(e->start_s);
      const double w = std::max(0.5, x_of(e->end_s) - x);
      const std::string name = xml_escape(e->name), kind = xml_escape(e->kind);
      std::snprintf(buf, sizeof buf,
                    "<rect class=\"event\" data-kind=\"%s\" x=\"%.2f\" y=\"%.0f\" "
                    "width=\"%.2f\" height=\"%.0f\" fill=\"%s\"%s><title>",
                    kind.c_str(), x, y, w, h, color_of(e->kind),
                    lane == 0 ? " stroke=\"white\" stroke-width=\"0.6\"" : "");
      svg += buf;
      std::snprintf(buf, sizeof buf, " (%s): %.3f to %.3f %s</title></rect>\n", kind.c_str(),
                    (e->start_s - t0) * scale, (e->end_s - t0) * scale, unit);
      svg += name + buf;
      if (lane == 0 && w >= 5.6 * e->name.size() + 3) {
        std::snprintf(buf, sizeof buf,
                      "<text class=\"label\" x=\"%.2f\" y=\"%.0f\" text-anchor=\"middle\" "
                      "font-size=\"10\" fill=\"%s\">",
                      x + w / 2, y + 14, is_compute(e->kind) ? "white" : "black");
        svg += buf + name + "</text>\n";
      }
    }
    svg += "</g>\n";
  }
  svg += "</svg>\n";
  return svg;
}

std::string plot_timeline(const std::string& trace_json, const std::string& svg_out) {
  const std::string svg = timeline_svg(trace_json);
  const std::string out = svg_out.empty()
                              ? std::filesystem::path(trace_json).replace_extension(".svg").string()
                              : svg_out;
  write_replacing(out, svg);
  return out;
}

std::vector<std::string> plot_run(const std::string& run_dir) {
  if (run_dir.empty())
    throw Error("parallama plot needs a run directory, or --trace FILE.json [--out FILE.svg]");
  const std::string trace = run_dir + "/" + kPipelineTraceFile;
  const bool has_trace = std::filesystem::exists(trace);
  std::vector<std::string> written;
  if (!has_trace || std::filesystem::exists(run_dir + "/metrics.jsonl"))
    written.push_back(plot_losses(run_dir));
  if (has_trace) written.push_back(plot_timeline(trace, run_dir + "/pipeline.svg"));
  return written;
}

}  // namespace parallama
