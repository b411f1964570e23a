#include "train/traffic.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace parallama {

namespace {

double both(const comm::Traffic& t) {
  return t.sent + t.received;
}

constexpr int kAxisCount = 4;

}  // namespace

AxisBytes AxisBytes::operator-(const AxisBytes& o) const {
  return {dp - o.dp, tp - o.tp, pp - o.pp, other - o.other};
}
AxisBytes& AxisBytes::operator+=(const AxisBytes& o) {
  dp += o.dp, tp += o.tp, pp += o.pp, other += o.other;
  return *this;
}
AxisBytes AxisBytes::operator/(double d) const {
  return {dp / d, tp / d, pp / d, other / d};
}

AxisBytes axis_bytes(const Mesh& mesh, const comm::Group* servers) {
  AxisBytes b;
  b.dp = both(mesh.dp.traffic()) + (servers ? both(servers->traffic()) : 0.0);
  b.tp = both(mesh.tp.traffic());
  b.pp = both(mesh.pp.traffic()) + both(mesh.tied.traffic());
  b.other = both(mesh.replica.traffic());
  return b;
}

std::string describe_axes(const AxisBytes& b) {
  std::string out;
  const auto v = b.values();
  for (int a = 0; a < kAxisCount; ++a) {
    char part[64];
    std::snprintf(part, sizeof part, "%s%s %.3f MB", a ? ", " : "", kAxes[a], v[a] / 1e6);
    out += part;
  }
  return out;
}

void add_step_traffic(nlohmann::json& j, comm::Group& all_workers, bool own_only, bool many,
                      const comm::Traffic& step, const AxisBytes& axes, const StepTimes& times) {
  const auto v = axes.values();
  j["bytes_sent"] = step.sent, j["bytes_received"] = step.received;
  for (int a = 0; a < kAxisCount; ++a) j[std::string("bytes_") + kAxes[a]] = v[a];
  j["compute_s"] = times.compute_s, j["wait_s"] = times.wait_s;
  if (!many) return;
  constexpr int kPer = 5 + kAxisCount;  // sent, received, the axes, compute, wait, stage
  const double mine[kPer] = {step.sent,
                             step.received,
                             v[0],
                             v[1],
                             v[2],
                             v[3],
                             times.compute_s,
                             times.wait_s,
                             static_cast<double>(times.stage)};
  std::vector<double> all(mine, mine + kPer);
  if (!own_only) {
    all.resize(kPer * all_workers.size());
    all_workers.all_gather(mine, all.data(), std::vector<int64_t>(all_workers.size(), kPer),
                           DType::F64);
  }
  nlohmann::json per_rank = nlohmann::json::array();
  for (size_t w = 0; w < all.size() / kPer; ++w) {
    const double* r = all.data() + kPer * w;
    nlohmann::json e = {{"rank", w}, {"role", "worker"}, {"sent", r[0]}, {"received", r[1]}};
    for (int a = 0; a < kAxisCount; ++a) e[kAxes[a]] = r[2 + a];
    e["compute_s"] = r[2 + kAxisCount], e["wait_s"] = r[3 + kAxisCount];
    e["stage"] = static_cast<int>(r[4 + kAxisCount]);
    per_rank.push_back(e);
  }
  if (j.contains("server_bytes")) {  // a server's traffic is all data-parallel
    for (size_t s = 0; s < j["server_bytes"].size(); ++s) {
      const double sent = j["server_bytes"][s][0], received = j["server_bytes"][s][1];
      per_rank.push_back({{"rank", all_workers.size() + static_cast<int>(s)},
                          {"role", "server"},
                          {"sent", sent},
                          {"received", received},
                          {"dp", sent + received},
                          {"tp", 0.0},
                          {"pp", 0.0},
                          {"other", 0.0}});
    }
    j.erase("server_bytes");
  }
  j["bytes_per_rank"] = per_rank;
}

nlohmann::json traffic_summary(comm::Group& world, const Roles& roles, int64_t steps,
                               const AxisBytes& axes, int64_t params) {
  constexpr int kPer = 3 + kAxisCount;  // params, sent, received, then the axes
  const double sent = static_cast<double>(world.bytes_sent());
  const double received = static_cast<double>(world.bytes_received());
  const AxisBytes mine_axes = roles.server ? AxisBytes{sent + received, 0, 0, 0} : axes;
  const auto v = mine_axes.values();
  const double mine[kPer] = {static_cast<double>(params), sent, received, v[0], v[1], v[2], v[3]};
  std::vector<double> all(kPer * world.size());
  world.all_gather(mine, all.data(), std::vector<int64_t>(world.size(), kPer), DType::F64);
  const double per = static_cast<double>(std::max<int64_t>(steps, 1));
  nlohmann::json ranks = nlohmann::json::array();
  for (int r = 0; r < world.size(); ++r) {
    const double* x = all.data() + kPer * r;
    nlohmann::json e = {{"rank", r},
                        {"role", r < roles.num_workers ? "worker" : "server"},
                        {"host", world.host(r)},
                        {"params", static_cast<int64_t>(x[0])},
                        {"bytes_sent_per_step", x[1] / per},
                        {"bytes_received_per_step", x[2] / per}};
    for (int a = 0; a < kAxisCount; ++a)
      e[std::string("bytes_") + kAxes[a] + "_per_step"] = x[3 + a] / per;
    ranks.push_back(e);
  }
  return ranks;
}

std::string describe_rank_traffic(const nlohmann::json& r) {
  AxisBytes b;
  b.dp = r["bytes_dp_per_step"], b.tp = r["bytes_tp_per_step"];
  b.pp = r["bytes_pp_per_step"], b.other = r["bytes_other_per_step"];
  char line[160];
  std::snprintf(line, sizeof line,
                "rank %d (%s): %.3f MB sent, %.3f MB received per step; by axis, sent + "
                "received: ",
                r["rank"].get<int>(), r["role"].get<std::string>().c_str(),
                r["bytes_sent_per_step"].get<double>() / 1e6,
                r["bytes_received_per_step"].get<double>() / 1e6);
  return line + describe_axes(b);
}

nlohmann::json compression_summary(const ParallelConfig& p) {
  nlohmann::json j = {{"method", compress_name(p.grads.compress)},
                      {"after", p.grads.compress_after}};
  if (p.grads.compress == Compress::powersgd) j["powersgd_rank"] = p.grads.powersgd_rank;
  if (p.strategy.sync == Sync::diloco)
    j["diloco"] = outer_compress_name(p.strategy.diloco_compress);
  return j;
}

}  // namespace parallama
