#pragma once
// The run report: one self-contained HTML page (no network, no external scripts or fonts) of what
// a run directory records. Charts, drawn in the page from its embedded data with the values under
// the pointer: training and validation loss against steps and against wall-clock time, learning
// rate, gradient norm, tokens/s, model FLOP/s (MFU against a GEMM peak, where one is known), bytes
// per mesh axis, communication time and its exposed part, the pipeline bubble, the fp16 loss
// scale, memory per rank, compute and wait per rank, balance shares and link rates (those a run
// records). Beside them: the pipeline timeline (pipeline_trace.json), stragglers, traffic per
// rank, the layout and the whole configuration.
//
// It reads RUN_DIR/metrics.jsonl (train/plot.h's reader: a torn last line is named in the page
// and left out), summary.json (multi-rank totals, at the end of a run), run.json (written by train
// when a run starts: its configuration, layout and model FLOPs per token, and the measured GEMM
// peak with --report-every) or else the latest checkpoint's trainer.json.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace parallama {

inline constexpr const char* kRunInfoFile = "run.json";
inline constexpr const char* kReportFile = "report.html";

// The charts of a run: one object per chart, {id, title, kind: "line" | "bar", x_label, y_label,
// unit, series: [{name, x, y}] (line) or categories + series: [{name, y}] (bar)}; a chart is
// there only when the run recorded its values. Per-step series are thinned to at most
// `max_points` points (every k-th step and the last; validation losses all kept).
// peak_gflops > 0 (the machine's summed GEMM peak) makes the throughput chart MFU.
nlohmann::json report_charts(const std::vector<nlohmann::json>& steps,
                             const nlohmann::json& summary, double flops_per_token,
                             double peak_gflops, size_t max_points = 2000);

// The page for run_dir. peak_gflops > 0 overrides the peak that run.json records.
std::string report_html(const std::string& run_dir, double peak_gflops);

// report_html written to `out` (empty: RUN_DIR/report.html) through a temporary file renamed
// into place. Returns the path written. Errors (one line): no metrics.jsonl or no step in it, a
// line that is not a metrics line, a summary.json or run.json that is not JSON.
std::string write_report(const std::string& run_dir, const std::string& out, double peak_gflops);

}  // namespace parallama
