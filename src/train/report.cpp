#include "train/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "io/checkpoint.h"
#include "io/paths.h"
#include "plan/plan.h"
#include "tensor/error.h"
#include "train/plot.h"
#include "train/report_assets.h"
#include "train/run_config.h"
#include "train/run_dir.h"
#include "train/trace.h"

namespace parallama {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Per-step values: the step, and the value where the line has it (null where not).
struct Column {
  std::vector<double> x;
  std::vector<json> y;
  bool any = false;
};

double number_or(const json& j, const char* key, double fallback) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : fallback;
}

// The steps to draw: every k-th and the last, at most max_points of them.
std::vector<size_t> thinned(size_t n, size_t max_points) {
  const size_t stride = std::max<size_t>(1, (n + max_points - 1) / std::max<size_t>(1, max_points));
  std::vector<size_t> keep;
  for (size_t i = 0; i < n; i += stride) keep.push_back(i);
  if (n && keep.back() != n - 1) keep.push_back(n - 1);
  return keep;
}

json series(const std::string& name, const std::vector<double>& x, const std::vector<json>& y) {
  return {{"name", name}, {"x", x}, {"y", y}};
}

json line_chart(const std::string& id, const std::string& title, const std::string& x_label,
                const std::string& y_label, json series_list, const std::string& unit = "") {
  return {{"id", id},
          {"title", title},
          {"kind", "line"},
          {"x_label", x_label},
          {"y_label", y_label},
          {"unit", unit},
          {"series", std::move(series_list)}};
}

// Seconds since the run began, over resumed segments: each process counts from its own start,
// so a step whose time is below the one before begins a new segment after the last.
std::vector<double> wall_clock(const std::vector<json>& steps) {
  std::vector<double> out;
  double offset = 0, prev = 0;
  for (const json& j : steps) {
    const double e = number_or(j, "elapsed", prev);
    if (e < prev) offset += prev;
    prev = e;
    out.push_back(offset + e);
  }
  return out;
}

// Means over the steps after the first (its time includes warming up) of each rank's compute and
// wait seconds per step.
json rank_times_chart(const std::vector<json>& steps) {
  std::map<int, std::pair<double, double>> sum;
  int n = 0;
  for (size_t i = steps.size() > 1 ? 1 : 0; i < steps.size(); ++i) {
    if (!steps[i].contains("bytes_per_rank")) continue;
    ++n;
    for (const json& r : steps[i]["bytes_per_rank"]) {
      auto& s = sum[r.value("rank", 0)];
      s.first += number_or(r, "compute_s", 0), s.second += number_or(r, "wait_s", 0);
    }
  }
  if (sum.size() < 2 || n == 0) return nullptr;
  json cats = json::array(), compute = json::array(), wait = json::array();
  for (const auto& [rank, s] : sum) {
    cats.push_back("rank " + std::to_string(rank));
    compute.push_back(s.first / n), wait.push_back(s.second / n);
  }
  return {{"id", "ranks"},
          {"title", "Compute and wait per rank (mean s per step)"},
          {"kind", "bar"},
          {"x_label", "rank"},
          {"y_label", "seconds"},
          {"unit", "s"},
          {"categories", cats},
          {"series", {{{"name", "compute"}, {"y", compute}}, {{"name", "waiting"}, {"y", wait}}}}};
}

json memory_chart(const json& summary) {
  if (!summary.contains("memory") || !summary["memory"].is_array() || summary["memory"].empty())
    return nullptr;
  json cats = json::array(), p = json::array(), g = json::array(), o = json::array();
  for (const json& r : summary["memory"]) {
    cats.push_back("rank " + std::to_string(r.value("rank", 0)));
    p.push_back(number_or(r, "parameters", 0) / 1e6);
    g.push_back(number_or(r, "gradients", 0) / 1e6);
    o.push_back(number_or(r, "optimizer_state", 0) / 1e6);
  }
  return {{"id", "memory"},
          {"title", "Model state per rank (MB)"},
          {"kind", "bar"},
          {"stacked", true},
          {"x_label", "rank"},
          {"y_label", "MB"},
          {"unit", "MB"},
          {"categories", cats},
          {"series",
           {{{"name", "parameters"}, {"y", p}},
            {{"name", "gradients"}, {"y", g}},
            {{"name", "optimizer state"}, {"y", o}}}}};
}

// One line per element of an array field ("shares": one per rank; "link_mb_per_s": one per link).
json array_chart(const std::vector<json>& steps, const std::vector<size_t>& keep, const char* key,
                 const std::string& id, const std::string& title, const std::string& y_label,
                 const std::string& unit) {
  std::map<std::string, std::pair<std::vector<double>, std::vector<json>>> lines;
  for (size_t i : keep) {
    const json& j = steps[i];
    if (!j.contains(key) || !j[key].is_array()) continue;
    const double s = j["step"].get<double>();
    for (size_t k = 0; k < j[key].size(); ++k) {
      const json& v = j[key][k];
      std::string name = "rank " + std::to_string(k);
      json y = v;
      if (v.is_object()) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "rank %d to %d", v.value("from", 0), v.value("to", 0));
        name = buf, y = v.value("mb_per_s", 0.0);
      }
      lines[name].first.push_back(s), lines[name].second.push_back(y);
    }
  }
  if (lines.empty()) return nullptr;
  json list = json::array();
  for (const auto& [name, xy] : lines) list.push_back(series(name, xy.first, xy.second));
  return line_chart(id, title, "step", y_label, std::move(list), unit);
}

}  // namespace

json report_charts(const std::vector<json>& steps, const json& summary, double flops_per_token,
                   double peak_gflops, size_t max_points) {
  const std::vector<size_t> keep = thinned(steps.size(), max_points);
  const std::vector<double> wall = wall_clock(steps);
  auto column = [&](const char* key, double scale = 1, bool by_time = false) {
    Column c;
    for (size_t i : keep) {
      const json& j = steps[i];
      c.x.push_back(by_time ? wall[i] : j["step"].get<double>());
      const bool has = j.contains(key) && j[key].is_number();
      c.y.push_back(has ? json(j[key].get<double>() * scale) : json(nullptr));
      c.any = c.any || has;
    }
    return c;
  };
  auto validation = [&](bool by_time) {
    Column c;
    for (size_t i = 0; i < steps.size(); ++i)
      if (steps[i].contains("val_loss")) {
        c.x.push_back(by_time ? wall[i] : steps[i]["step"].get<double>());
        c.y.push_back(steps[i]["val_loss"]);
      }
    json s = series("validation", c.x, c.y);
    s["dots"] = true;
    return s;
  };
  json charts = json::array();
  for (const bool by_time : {false, true}) {
    const Column train = column("loss", 1, by_time);
    json list = {series("train", train.x, train.y)};
    if (const json v = validation(by_time); !v["x"].empty()) list.push_back(v);
    charts.push_back(line_chart(by_time ? "loss_time" : "loss",
                                by_time ? "Loss against wall-clock time" : "Loss against steps",
                                by_time ? "seconds" : "step", "loss", std::move(list)));
  }
  auto one = [&](const char* key, const std::string& id, const std::string& title,
                 const std::string& y_label, const std::string& unit, double scale = 1) {
    const Column c = column(key, scale);
    if (c.any)
      charts.push_back(line_chart(id, title, "step", y_label, {series(y_label, c.x, c.y)}, unit));
  };
  one("lr", "lr", "Learning rate", "learning rate", "");
  one("grad_norm", "grad_norm", "Gradient norm (global, before clipping)", "norm", "");
  one("tokens_per_s", "tokens_per_s", "Throughput", "tokens/s", "tokens/s");
  if (flops_per_token > 0) {
    const bool mfu = peak_gflops > 0;
    one("tokens_per_s", "flops",
        mfu ? "MFU (model FLOPs / the measured GEMM peak)"
            : "Model GFLOP/s (no GEMM peak recorded)",
        mfu ? "MFU %" : "GFLOP/s", mfu ? "%" : "GFLOP/s",
        flops_per_token / 1e9 / (mfu ? peak_gflops / 100 : 1));
  }
  json axes = json::array();
  for (const char* axis : {"dp", "tp", "pp", "other"}) {
    const Column c = column(("bytes_" + std::string(axis)).c_str(), 1e-6);
    bool nonzero = false;
    for (const json& v : c.y) nonzero = nonzero || (v.is_number() && v.get<double>() > 0);
    if (nonzero) axes.push_back(series(axis, c.x, c.y));
  }
  if (!axes.empty())
    charts.push_back(line_chart("traffic", "Traffic per mesh axis (MB sent + received per step)",
                                "step", "MB", std::move(axes), "MB"));
  if (const Column c = column("comm_s"); c.any) {
    const Column e = column("comm_exposed_s");
    charts.push_back(line_chart("comm", "Data-parallel communication per step", "step", "seconds",
                                {series("in flight", c.x, c.y), series("exposed", e.x, e.y)}, "s"));
  }
  one("pp_bubble", "bubble", "Pipeline bubble (share of the step)", "bubble %", "%", 100);
  one("loss_scale", "loss_scale", "fp16 loss scale", "scale", "");
  for (json c :
       {memory_chart(summary), rank_times_chart(steps),
        array_chart(steps, keep, "shares", "shares", "Balance: micro-batches per rank",
                    "micro-batches", ""),
        array_chart(steps, keep, "link_mb_per_s", "links", "Probed link rates", "MB/s", "MB/s")})
    if (!c.is_null()) charts.push_back(std::move(c));
  return charts;
}

namespace {

json read_json_file(const std::string& path, const char* what) {
  std::ifstream f = open_input(path, what, kMaxConfigBytes);
  try {
    return json::parse(f);
  } catch (const json::exception&) {
    throw Error(path + ": not JSON (the " + std::string(what) + " of a run)");
  }
}

std::string esc(const std::string& s) {
  return xml_escape(s);
}

std::string fmt(double v, const char* f = "%.4g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string cell(const json& v) {
  if (v.is_string()) return esc(v.get<std::string>());
  if (v.is_number_float()) return fmt(v.get<double>());
  return esc(v.dump());
}

// A table of rows (objects), with the given columns (all keys of the first row when empty).
std::string table(const json& rows, std::vector<std::string> columns = {}) {
  if (!rows.is_array() || rows.empty()) return "";
  if (columns.empty())
    for (const auto& [k, v] : rows[0].items()) columns.push_back(k);
  std::string h = "<div class=\"scroll\"><table><tr>";
  for (const auto& c : columns) h += "<th>" + esc(c) + "</th>";
  h += "</tr>";
  for (const json& r : rows) {
    h += "<tr>";
    for (const auto& c : columns)
      h += std::string(r.contains(c) && r[c].is_number() ? "<td class=\"num\">" : "<td>") +
           (r.contains(c) ? cell(r[c]) : "") + "</td>";
    h += "</tr>";
  }
  return h + "</table></div>";
}

std::string config_tables(const json& config) {
  std::string h;
  for (const auto& [section, keys] : config.items()) {
    if (!keys.is_object()) continue;
    h += "<section class=\"card\"><h3>[" + esc(section) + "]</h3><table>";
    for (const auto& [k, v] : keys.items())
      h += "<tr><th>" + esc(k) + "</th><td>" + cell(v) + "</td></tr>";
    h += "</table></section>";
  }
  return h;
}

// The run's configuration and layout: run.json, or the latest checkpoint's trainer.json.
json run_info(const std::string& run_dir) {
  const std::string path = (fs::path(run_dir) / kRunInfoFile).string();
  if (fs::exists(path)) return read_json_file(path, "run record");
  const std::string ckpt = latest_checkpoint(run_dir);
  if (ckpt.empty()) return json::object();
  const json t = read_trainer_json(ckpt);
  return {{"config", t.value("config", json::object())},
          {"layout", t.value("layout", json::object())}};
}

double flops_per_token_of(const json& config, const std::string& source) {
  if (!config.is_object() || config.empty()) return 0;
  try {
    const RunConfig c = config_from_json(config, source, ConfigUse::none);
    return model_flops_per_token(c.model, c.train.seq_len);
  } catch (const Error&) {
    return 0;  // a configuration of another version: no FLOPs, the rest of the report stands
  }
}

std::string facts(const std::vector<json>& steps, const json& info, const json& charts,
                  double peak) {
  const json& last = steps.back();
  double best_val = NAN;
  std::vector<double> tps;
  for (const json& j : steps) {
    if (j.contains("val_loss"))
      best_val = std::isnan(best_val) ? j["val_loss"].get<double>()
                                      : std::min(best_val, j["val_loss"].get<double>());
    tps.push_back(number_or(j, "tokens_per_s", 0));
  }
  std::sort(tps.begin(), tps.end());
  const std::vector<double> wall = wall_clock(steps);
  std::vector<std::pair<std::string, std::string>> f = {
      {"steps", fmt(steps.front()["step"].get<double>(), "%.0f") + "–" +
                    fmt(last["step"].get<double>(), "%.0f")},
      {"last train loss", fmt(last["loss"].get<double>())},
      {"best validation loss", std::isnan(best_val) ? "–" : fmt(best_val)},
      {"wall-clock", fmt(wall.back(), "%.1f") + " s"},
      {"median tokens/s", fmt(tps[tps.size() / 2], "%.0f")}};
  if (info.contains("layout")) {
    const json& l = info["layout"];
    f.push_back({"layout", "dp " + l.value("dp", json(1)).dump() + " × tp " +
                               l.value("tp", json(1)).dump() + " × pp " +
                               l.value("pp", json(1)).dump() + ", " +
                               l.value("sync", std::string("allreduce"))});
  }
  if (peak > 0) f.push_back({"GEMM peak", fmt(peak, "%.1f") + " GFLOP/s"});
  f.push_back({"charts", std::to_string(charts.size())});
  std::string h = "<ul class=\"facts\">";
  for (const auto& [k, v] : f) h += "<li>" + esc(k) + "<b>" + esc(v) + "</b></li>";
  return h + "</ul>";
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

// The pipeline timeline, where the run wrote one: RUN_DIR/pipeline_trace.json, or
// parallel.pp_trace.
std::string timeline(const std::string& run_dir, const json& info) {
  std::vector<std::string> candidates = {(fs::path(run_dir) / kPipelineTraceFile).string()};
  if (info.contains("config") && info["config"].contains("parallel"))
    candidates.push_back(info["config"]["parallel"].value("pp_trace", std::string()));
  for (const std::string& path : candidates) {
    std::error_code ec;
    if (path.empty() || !fs::is_regular_file(path, ec)) continue;
    return "<h2>Pipeline timeline</h2><section class=\"card scroll timeline\">" +
           timeline_svg(path) + "</section>";
  }
  return "";
}

}  // namespace

std::string report_html(const std::string& run_dir, double peak_gflops) {
  const MetricsLines metrics = read_metrics(run_dir);
  const std::string summary_path = (fs::path(run_dir) / "summary.json").string();
  const json summary =
      fs::exists(summary_path) ? read_json_file(summary_path, "summary") : json::object();
  const json info = run_info(run_dir);
  const double peak = peak_gflops > 0 ? peak_gflops : number_or(info, "gemm_peak_gflops", 0);
  const double fpt = flops_per_token_of(info.value("config", json::object()), run_dir);
  const json charts = report_charts(metrics.steps, summary, fpt, peak);

  std::string name = fs::path(run_dir).lexically_normal().filename().string();
  if (name.empty() || name == ".") name = fs::absolute(run_dir).lexically_normal().string();
  std::string h =
      "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta "
      "name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
      esc(name) + " · parallama run report</title>\n<style>\n" + std::string(kReportCss) +
      "</style></head>\n<body>\n<header><h1>" + esc(name) + "</h1><p>parallama run report of " +
      esc(run_dir) + ", written " + now_utc() + "</p>" + facts(metrics.steps, info, charts, peak) +
      "</header>\n<main>\n";
  if (!metrics.torn.empty()) h += "<p class=\"note\">" + esc(metrics.torn) + "</p>\n";
  h += "<div id=\"report-status\" hidden></div>\n<noscript><p class=\"note\">The charts are drawn "
       "by the page's script: allow JavaScript for this file.</p></noscript>\n"
       "<div class=\"grid\">\n";
  for (const json& c : charts)
    h += "<figure class=\"chart\" data-chart=\"" + esc(c["id"].get<std::string>()) +
         "\"><figcaption>" + esc(c["title"].get<std::string>()) +
         "</figcaption><div class=\"plot\"></div></figure>\n";
  h += "</div>\n" + timeline(run_dir, info);
  std::string tables;
  if (summary.contains("stragglers") && !summary["stragglers"].empty())
    tables += "<section class=\"card\"><h3>Stragglers (slow compute)</h3>" +
              table(summary["stragglers"]) + "</section>";
  if (summary.contains("network_stragglers") && !summary["network_stragglers"].empty())
    tables += "<section class=\"card\"><h3>Slow links</h3>" + table(summary["network_stragglers"]) +
              "</section>";
  if (summary.contains("ranks"))
    tables += "<section class=\"card\"><h3>Traffic per rank (bytes per step)</h3>" +
              table(summary["ranks"],
                    {"rank", "host", "role", "bytes_sent_per_step", "bytes_received_per_step",
                     "bytes_dp_per_step", "bytes_tp_per_step", "bytes_pp_per_step"}) +
              "</section>";
  if (info.contains("layout"))
    tables += "<section class=\"card\"><h3>Layout</h3>" + table(json::array({info["layout"]})) +
              "</section>";
  if (!tables.empty()) h += "<h2>Ranks and layout</h2><div class=\"tables\">" + tables + "</div>\n";
  if (info.contains("config"))
    h +=
        "<h2>Configuration</h2><div class=\"tables\">" + config_tables(info["config"]) + "</div>\n";
  std::string data = json{{"charts", charts}}.dump(-1, ' ', false, json::error_handler_t::replace);
  for (size_t at = 0; (at = data.find("</", at)) != std::string::npos; at += 3)
    data.replace(at, 2, "<\\/");
  h += "</main>\n<div id=\"report-tip\" hidden></div>\n<script type=\"application/json\" "
       "id=\"report-data\">" +
       data + "</script>\n<script>\n" + std::string(kReportJs) + "</script>\n</body></html>\n";
  return h;
}

std::string write_report(const std::string& run_dir, const std::string& out, double peak_gflops) {
  const std::string path = out.empty() ? (fs::path(run_dir) / kReportFile).string() : out;
  write_replacing(path, report_html(run_dir, peak_gflops));
  return path;
}

}  // namespace parallama
