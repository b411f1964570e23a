#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace parallama {

// s with & < > " replaced by their XML entities, for SVG text and attributes.
std::string xml_escape(const std::string& s);

// The steps of run_dir/metrics.jsonl, in order (each an object with a numeric "step" and "loss").
// A last line that is not JSON (a write cut short by a crash) is skipped and `torn` names it;
// any other line that is not a metrics line, a missing file or one without steps is an Error
// naming the file (and line).
struct MetricsLines {
  std::vector<nlohmann::json> steps;
  std::string torn;  // "PATH:LINE: the last line is incomplete ...", or ""
};
MetricsLines read_metrics(const std::string& run_dir);

// Writes text to path through a temporary file renamed into place, so a reader never sees half a
// file. A symbolic link at path is followed (the file lands where it points, and the link
// stays); a device or a pipe is written straight into. Throws "cannot write PATH: REASON".
void write_replacing(const std::string& path, const std::string& text);

// Reads run_dir/metrics.jsonl and writes run_dir/loss.svg: training and validation loss against
// steps. Returns the path written. Throws Error when there are no metrics or a line that is not
// a metrics line (naming the file and line); only a last line that is not JSON (a write cut short
// by a crash) is skipped, with a warning on stderr. Throws
// "cannot write PATH: REASON" when the picture cannot be written. Every picture is written to a
// temporary file and renamed into place; a symbolic link at PATH is followed (the link stays), and
// a device or a pipe is written straight into.
std::string plot_losses(const std::string& run_dir);

// The SVG timeline of a Chrome trace (train/trace.h): one row per pipeline stage, an event's bar
// coloured by its kind (compute above, sends and receives in thin lanes below), a legend, a time
// axis, and the share of time each stage computes. Throws Error for a trace with no events.
std::string timeline_svg(const std::string& trace_json);
// timeline_svg written to svg_out (empty: the trace's path with the extension .svg). Returns the
// path written.
std::string plot_timeline(const std::string& trace_json, const std::string& svg_out);

// `parallama plot RUN_DIR`: loss.svg from metrics.jsonl and, when RUN_DIR has a
// pipeline_trace.json, pipeline.svg from it. Returns the paths written; an Error when RUN_DIR has
// neither file (or is empty).
std::vector<std::string> plot_run(const std::string& run_dir);

}  // namespace parallama
