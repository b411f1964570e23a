// Pipeline traces: Chrome trace JSON written and read back, and the SVG timeline drawn from it,
// checked by reading the SVG text (rows, bars, their kinds, colours and places).
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "parallel/schedule.h"
#include "tensor/error.h"
#include "train/plot.h"
#include "train/trace.h"

namespace parallama {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test (tests may run at the same time).
std::string fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("parallama_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A plausible trace: each rank runs its 1F1B list back to back after a start offset, waits in
// between, and sends after every action.
std::vector<TraceEvent> sample_trace(int stages, int micro) {
  std::vector<TraceEvent> events;
  for (int r = 0; r < stages; ++r) {
    double t = 0.001 * r;
    if (r > 0) events.push_back({"wait", "idle", r, 0.0, t});
    for (const PipeAction& a : pipeline_schedule(PipeSchedule::OneFOneB, stages, r, micro, 1)) {
      const bool fwd = a.op == PipeOp::Forward;
      const double d = fwd ? 0.0010 : 0.0021;
      const std::string name = format_actions({a});
      events.push_back({name, fwd ? "forward" : "backward", r, t, t + d});
      events.push_back({"send " + name, "send", r, t + d, t + d + 0.0002});
      events.push_back({"recv " + name, "recv", r, t + 0.0001, t + 0.0003});
      t += d + 0.0001;
    }
  }
  return events;
}

TEST(Trace, ChromeJsonRoundTrip) {
  const std::string dir = fresh_dir("trace_round_trip");
  std::vector<TraceEvent> events = sample_trace(3, 4);
  events.push_back({"quote \" back\\slash <tag> \u00e9", "idle", 5, 12.5, 12.5});  // zero length
  events.push_back({"late", "forward", 0, 86400.000123456, 86400.0002});
  const std::string path = dir + "/t.json";
  write_chrome_trace(path, events);
  for (const auto& e : fs::directory_iterator(dir))  // no temporary left behind
    EXPECT_EQ(e.path().filename(), "t.json");

  const std::vector<TraceEvent> back = read_chrome_trace(path);
  ASSERT_EQ(back.size(), events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(back[i].name, events[i].name);
    EXPECT_EQ(back[i].kind, events[i].kind);
    EXPECT_EQ(back[i].rank, events[i].rank);
    EXPECT_NEAR(back[i].start_s, events[i].start_s, 2e-9) << i;
    EXPECT_NEAR(back[i].end_s, events[i].end_s, 2e-9) << i;
  }

  // The file itself, as Perfetto reads it: complete events in microseconds on thread = rank,
  // and one "stage N" name per rank.
  const auto doc = nlohmann::json::parse(read_text(path));
  std::map<int, std::string> thread_names;
  int complete = 0;
  for (const auto& j : doc.at("traceEvents")) {
    EXPECT_EQ(j.at("pid"), 0);
    if (j.at("ph") == "M") thread_names[j.at("tid")] = j.at("args").at("name");
    if (j.at("ph") != "X") continue;
    if (j.at("name") == "F1.0" && j.at("tid") == 0) {
      EXPECT_NEAR(j.at("ts").get<double>(), 1100.0, 1e-6);  // after F0.0: 1 ms + 0.1 ms
      EXPECT_NEAR(j.at("dur").get<double>(), 1000.0, 1e-6);
      EXPECT_EQ(j.at("cat"), "forward");
    }
    ++complete;
  }
  EXPECT_EQ(complete, int(events.size()));
  EXPECT_EQ(thread_names, (std::map<int, std::string>{
                              {0, "stage 0"}, {1, "stage 1"}, {2, "stage 2"}, {5, "stage 5"}}));

  // A bare array of events is a trace too; other phases are skipped; "cat" may be absent.
  std::ofstream(dir + "/bare.json") << R"([{"name":"x","ph":"X","ts":5,"dur":2,"pid":1,"tid":3},
      {"name":"c","ph":"C","ts":1,"pid":0,"tid":0,"args":{"v":1}}])";
  const auto bare = read_chrome_trace(dir + "/bare.json");
  ASSERT_EQ(bare.size(), 1u);
  EXPECT_EQ(bare[0], (TraceEvent{"x", "", 3, 5e-6, 7e-6}));
  fs::remove_all(dir);
}

TEST(Trace, BadEventsAndFilesAreNamed) {
  const std::string dir = fresh_dir("trace_errors");
  const std::string path = dir + "/t.json";
  const std::pair<TraceEvent, std::string> bad[] = {
      {{"F0.0", "compute", 0, 0, 1}, "kind 'compute'"},
      {{"F0.0", "forward", -1, 0, 1}, "negative rank"},
      {{"F0.0", "forward", 0, 2, 1}, "ends before it starts"},
  };
  for (const auto& [event, want] : bad) {
    const std::string msg = error_of([&] { write_chrome_trace(path, {event}); });
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(path));  // nothing half-written
  }
  const std::string no_dir = dir + "/missing/t.json";
  EXPECT_NE(error_of([&] { write_chrome_trace(no_dir, sample_trace(1, 1)); }).find(no_dir),
            std::string::npos);

  const std::pair<std::string, std::string> files[] = {
      {"{\"traceEvents\": [", "not a JSON trace"},
      {"{\"events\": []}", "traceEvents"},
      {"42", "array of events"},
      {"[{\"name\":\"a\",\"ph\":\"X\",\"dur\":1,\"tid\":0}]", "trace event 0 needs"},
      {"[{\"name\":\"a\",\"ph\":\"X\",\"ts\":0,\"dur\":1,\"tid\":\"main\"}]", "integer \"tid\""},
      {"[1]", "trace event 0 is not an object"},
      {"[{\"ph\":\"M\"},{\"name\":\"a\",\"ph\":\"X\",\"ts\":0,\"dur\":-1,\"tid\":0}]",
       "trace event 1 ('a') has a negative"},
  };
  for (const auto& [text, want] : files) {
    std::ofstream(path) << text;
    const std::string msg = error_of([&] { read_chrome_trace(path); });
    EXPECT_NE(msg.find(want), std::string::npos) << text << " -> " << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
  EXPECT_NE(error_of([&] { read_chrome_trace(dir + "/none.json"); }).find(dir + "/none.json"),
            std::string::npos);
  fs::remove_all(dir);
}

struct SvgBar {
  int stage;
  std::string kind, fill;
  double x, w;
};

// The bars of a timeline, by reading the SVG text: each inside its stage's group. Groups and
// tags are cut out with plain searches (a regular expression over the whole document recurses
// too deeply for std::regex); each <rect> tag alone is then matched.
std::vector<SvgBar> svg_bars(const std::string& svg, int* groups) {
  const std::string open = "<g class=\"stage\" data-stage=\"";
  const std::regex bar(
      R"re(<rect class="event" data-kind="([^"]*)" x="([-\d.]+)" y="[-\d.]+" width="([\d.]+)" height="[\d.]+" fill="([^"]+)"[^>]*>)re");
  std::vector<SvgBar> bars;
  *groups = 0;
  for (size_t at = svg.find(open); at != std::string::npos; at = svg.find(open, at + 1)) {
    const size_t num = at + open.size(), close = svg.find("</g>", num);
    if (close == std::string::npos) break;
    ++*groups;
    const int stage = std::stoi(svg.substr(num, svg.find('"', num) - num));
    for (size_t r = svg.find("<rect ", num); r != std::string::npos && r < close;
         r = svg.find("<rect ", r + 1)) {
      const std::string tag = svg.substr(r, svg.find('>', r) - r + 1);
      std::smatch m;
      if (std::regex_match(tag, m, bar))
        bars.push_back({stage, m[1], m[4], std::stod(m[2]), std::stod(m[3])});
    }
  }
  return bars;
}

TEST(Timeline, OneRowPerStageAndOneBarPerEvent) {
  const std::string dir = fresh_dir("timeline");
  std::vector<TraceEvent> events = sample_trace(4, 6);
  events.push_back({"odd", "checkpoint", 2, 0.002, 0.003});  // a kind from elsewhere: grey
  write_chrome_trace(dir + "/t.json", {});
  EXPECT_NE(error_of([&] { plot_timeline(dir + "/t.json", ""); }).find("no complete"),
            std::string::npos);
  {
    nlohmann::json list = nlohmann::json::array();
    for (const TraceEvent& e : events)
      list.push_back({{"name", e.name},
                      {"cat", e.kind},
                      {"ph", "X"},
                      {"ts", e.start_s * 1e6},
                      {"dur", (e.end_s - e.start_s) * 1e6},
                      {"pid", 0},
                      {"tid", e.rank}});
    std::ofstream(dir + "/t.json") << list.dump();
  }
  EXPECT_EQ(plot_timeline(dir + "/t.json", ""), dir + "/t.svg");  // default: beside the trace
  const std::string svg = read_text(dir + "/t.svg");

  int groups = 0;
  const std::vector<SvgBar> bars = svg_bars(svg, &groups);
  EXPECT_EQ(groups, 4);
  std::map<int, std::map<std::string, int>> want, got;
  for (const TraceEvent& e : events) ++want[e.rank][e.kind];
  for (const SvgBar& b : bars) ++got[b.stage][b.kind];
  EXPECT_EQ(got, want);
  for (int r = 0; r < 4; ++r)
    EXPECT_NE(svg.find(">stage " + std::to_string(r) + "<"), std::string::npos) << r;
  EXPECT_EQ(svg.find(">stage 4<"), std::string::npos);

  // Colours: each bar has the colour its kind has in the legend; every kind its own.
  std::map<std::string, std::string> legend;
  const std::regex swatch(
      R"re(<rect class="legend"[^>]*fill="([^"]+)"/><text[^>]*>([^<]+)</text>)re");
  for (std::sregex_iterator s(svg.begin(), svg.end(), swatch), end; s != end; ++s)
    legend[(*s)[2]] = (*s)[1];
  const std::map<std::string, std::string> label = {
      {"forward", "forward"}, {"backward", "backward"}, {"send", "send"},
      {"recv", "receive"},    {"idle", "idle"},         {"checkpoint", "other"}};
  ASSERT_EQ(legend.size(), label.size());
  for (const SvgBar& b : bars) EXPECT_EQ(b.fill, legend.at(label.at(b.kind))) << b.kind;

  // Places: time runs left to right over the whole plot; each bar starts at its event's time.
  double t0 = 1e30, t1 = -1e30;
  for (const TraceEvent& e : events) t0 = std::min(t0, e.start_s), t1 = std::max(t1, e.end_s);
  double lo = 1e30, hi = -1e30;
  for (const SvgBar& b : bars) lo = std::min(lo, b.x), hi = std::max(hi, b.x + b.w);
  EXPECT_NEAR(lo, 100, 0.01);
  EXPECT_NEAR(hi, 980, 0.01);
  for (const TraceEvent& e : events) {
    bool found = false;
    for (const SvgBar& b : bars)
      found = found || (b.stage == e.rank && b.kind == e.kind &&
                        std::abs(b.x - (100 + 880 * (e.start_s - t0) / (t1 - t0))) < 0.01 &&
                        std::abs(b.x + b.w - (100 + 880 * (e.end_s - t0) / (t1 - t0))) < 0.02);
    EXPECT_TRUE(found) << e.name << " on stage " << e.rank;
  }
  EXPECT_NE(svg.find("time (ms)"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Timeline, StagesWithoutEventsStillHaveARow) {
  const std::string dir = fresh_dir("timeline_gap");
  write_chrome_trace(dir + "/t.json",
                     {{"F0.0", "forward", 0, 0, 1}, {"F0.0", "forward", 2, 1, 2.5}});
  EXPECT_EQ(plot_timeline(dir + "/t.json", dir + "/x.svg"), dir + "/x.svg");
  int groups = 0;
  const auto bars = svg_bars(read_text(dir + "/x.svg"), &groups);
  EXPECT_EQ(groups, 3);
  ASSERT_EQ(bars.size(), 2u);
  EXPECT_EQ(bars[1].stage, 2);
  fs::remove_all(dir);
}

TEST(Plot, RunDirectoryDrawsLossesAndThePipelineTrace) {
  const std::string dir = fresh_dir("plot_run");
  EXPECT_NE(error_of([&] { plot_run(dir); }).find("metrics.jsonl"), std::string::npos);
  EXPECT_NE(error_of([&] { plot_run(""); }).find("--trace"), std::string::npos);
  write_chrome_trace(dir + "/" + kPipelineTraceFile, sample_trace(2, 2));
  EXPECT_EQ(plot_run(dir), std::vector<std::string>{dir + "/pipeline.svg"});
  std::ofstream(dir + "/metrics.jsonl") << "{\"step\": 1, \"loss\": 5.0}\n"
                                        << "{\"step\": 2, \"loss\": 4.5, \"val_loss\": 4.7}\n";
  EXPECT_EQ(plot_run(dir), (std::vector<std::string>{dir + "/loss.svg", dir + "/pipeline.svg"}));
  EXPECT_NE(read_text(dir + "/loss.svg").find("<polyline"), std::string::npos);
  fs::remove(dir + "/" + kPipelineTraceFile);
  EXPECT_EQ(plot_run(dir), std::vector<std::string>{dir + "/loss.svg"});
  fs::remove_all(dir);
}

}  // namespace
}  // namespace parallama
