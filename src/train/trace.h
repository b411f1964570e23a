#pragma once
// A timeline of a pipeline step: what every stage did when. Written as Chrome trace JSON, which
// Perfetto (ui.perfetto.dev) and chrome://tracing open, and drawn as SVG by `parallama plot`.
//
// The file is one object {"traceEvents": [...], "displayTimeUnit": "ms"}. Every event is a
// complete event: {"name", "cat": kind, "ph": "X", "ts" and "dur" in microseconds, "pid": 0,
// "tid": pipeline rank}; metadata events name each tid "stage N".
#include <string>
#include <vector>

namespace parallama {

// The file a run directory's pipeline trace has; `parallama plot RUN_DIR` draws it.
inline constexpr const char* kPipelineTraceFile = "pipeline_trace.json";

struct TraceEvent {
  std::string name;  // e.g. "F3.0" (forward of micro-batch 3 through chunk 0)
  std::string kind;  // "forward" | "backward" | "send" | "recv" | "idle"
  int rank = 0;      // pipeline rank (stage)
  double start_s = 0, end_s = 0;
  bool operator==(const TraceEvent&) const = default;
};

// The kinds a trace is made of, in legend order.
const std::vector<std::string>& trace_kinds();

// Writes the events (any order) atomically: a temporary file renamed into place. An Error names
// the file when it cannot be written, and the event when one is malformed (unknown kind,
// negative rank, end before start, a time that is not finite).
void write_chrome_trace(const std::string& path, const std::vector<TraceEvent>& events);

// Reads the complete ("ph": "X") events of a Chrome trace, either the object form above or a
// bare array of events; other events (metadata, counters) are skipped. The kind is the event's
// "cat" ("" when absent); the rank its "tid". An Error names the file and the bad event.
std::vector<TraceEvent> read_chrome_trace(const std::string& path);

}  // namespace parallama
