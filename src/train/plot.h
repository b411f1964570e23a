#pragma once
#include <string>
#include <vector>

namespace parallama {

// s with & < > " replaced by their XML entities, for SVG text and attributes.
std::string xml_escape(const std::string& s);

// Reads run_dir/metrics.jsonl and writes run_dir/loss.svg: training and validation loss against
// steps. Returns the path written. Throws Error when there are no metrics or a line that is not
// a metrics line (naming the file and line); only a last line that is not JSON (a write cut short
// by a crash) is skipped, with a warning on stderr. Throws
// "cannot write PATH: REASON" when the picture cannot be written. Every picture is written to a
// temporary file and renamed into place; a symbolic link at PATH is followed (the link stays), and
// a device or a pipe is written straight into.
std::string plot_losses(const std::string& run_dir);

// Reads a Chrome trace (train/trace.h) and writes an SVG timeline to svg_out (empty: the trace's
// path with the extension .svg): one row per pipeline stage, an event's bar coloured by its kind
// (compute above, sends and receives in thin lanes below), a legend, a time axis, and the share
// of time each stage computes. Returns the path written. Throws Error for a trace with no events.
std::string plot_timeline(const std::string& trace_json, const std::string& svg_out);

// `parallama plot RUN_DIR`: loss.svg from metrics.jsonl and, when RUN_DIR has a
// pipeline_trace.json, pipeline.svg from it. Returns the paths written; an Error when RUN_DIR has
// neither file (or is empty).
std::vector<std::string> plot_run(const std::string& run_dir);

}  // namespace parallama
