#include "train/trace.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>

#include "io/paths.h"
#include "tensor/error.h"

namespace parallama {

namespace {

using nlohmann::json;

std::string describe(const TraceEvent& e) {
  return "'" + e.name + "' (rank " + std::to_string(e.rank) + ")";
}

void check_event(const std::string& path, const TraceEvent& e) {
  const auto& kinds = trace_kinds();
  if (std::find(kinds.begin(), kinds.end(), e.kind) == kinds.end())
    throw Error(path + ": trace event " + describe(e) + " has kind '" + e.kind +
                "'; expected forward, backward, send, recv or idle");
  if (e.rank < 0) throw Error(path + ": trace event " + describe(e) + " has a negative rank");
  if (!std::isfinite(e.start_s) || !std::isfinite(e.end_s) || e.end_s < e.start_s)
    throw Error(path + ": trace event " + describe(e) + " ends before it starts (" +
                std::to_string(e.start_s) + " s to " + std::to_string(e.end_s) + " s)");
}

// Times are written in microseconds with whole nanoseconds: short to read, exact enough to
// read back.
int64_t to_ns(double s) {
  return std::llround(s * 1e9);
}

}  // namespace

const std::vector<std::string>& trace_kinds() {
  static const std::vector<std::string> kinds = {"forward", "backward", "send", "recv", "idle"};
  return kinds;
}

void write_chrome_trace(const std::string& path, const std::vector<TraceEvent>& events) {
  std::set<int> ranks;
  for (const TraceEvent& e : events) check_event(path, e), ranks.insert(e.rank);
  std::vector<json> list;
  for (int r : ranks)
    list.push_back({{"name", "thread_name"},
                    {"ph", "M"},
                    {"pid", 0},
                    {"tid", r},
                    {"args", {{"name", "stage " + std::to_string(r)}}}});
  for (const TraceEvent& e : events) {
    const int64_t ts = to_ns(e.start_s), te = to_ns(e.end_s);
    list.push_back({{"name", e.name},
                    {"cat", e.kind},
                    {"ph", "X"},
                    {"ts", double(ts) / 1e3},
                    {"dur", double(te - ts) / 1e3},
                    {"pid", 0},
                    {"tid", e.rank}});
  }

  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write trace " + path + ": " + std::strerror(errno));
    // One event per line: readable and still small.
    out << "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n";
    for (size_t i = 0; i < list.size(); ++i)
      out << list[i].dump(-1, ' ', false, json::error_handler_t::replace)
          << (i + 1 < list.size() ? ",\n" : "\n");
    out << "]}\n";
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw Error("cannot write trace " + path + " (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error("cannot write trace " + path + ": " + why);
  }
}

std::vector<TraceEvent> read_chrome_trace(const std::string& path) {
  std::ifstream in = open_input(path, "trace", kMaxMetricsBytes);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path + ": not a JSON trace (" + std::string(e.what()) + ")");
  }
  const json* list = &doc;
  if (doc.is_object()) {
    if (!doc.contains("traceEvents") || !doc["traceEvents"].is_array())
      throw Error(path + ": a Chrome trace needs a \"traceEvents\" array");
    list = &doc["traceEvents"];
  } else if (!doc.is_array()) {
    throw Error(path + ": a Chrome trace is an object with \"traceEvents\" or an array of events");
  }
  std::vector<TraceEvent> events;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& j = (*list)[i];
    const std::string where = path + ": trace event " + std::to_string(i);
    if (!j.is_object()) throw Error(where + " is not an object");
    if (j.value("ph", std::string()) != "X") continue;
    const bool ok = j.contains("name") && j["name"].is_string() && j.contains("ts") &&
                    j["ts"].is_number() && j.contains("dur") && j["dur"].is_number() &&
                    j.contains("tid") && j["tid"].is_number_integer() &&
                    (!j.contains("cat") || j["cat"].is_string());
    if (!ok)
      throw Error(where +
                  " needs a string \"name\", numbers \"ts\" and \"dur\" and an integer "
                  "\"tid\"");
    TraceEvent e;
    e.name = j["name"].get<std::string>();
    e.kind = j.value("cat", std::string());
    e.rank = j["tid"].get<int>();
    const double ts = j["ts"].get<double>(), dur = j["dur"].get<double>();
    if (e.rank < 0 || dur < 0 || !std::isfinite(ts) || !std::isfinite(dur))
      throw Error(where + " ('" + e.name + "') has a negative tid or duration");
    e.start_s = ts / 1e6;
    e.end_s = (ts + dur) / 1e6;
    events.push_back(std::move(e));
  }
  return events;
}

}  // namespace parallama
