#include "plan/profile.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "plan/plan.h"
#include "tensor/error.h"

namespace parallama {

namespace {

constexpr const char* kFormat = "parallama-profile";

nlohmann::json link_json(const LinkProfile& l) {
  return {{"latency_us", l.latency_us}, {"gbps", l.gbps}};
}

}  // namespace

Device Profile::device(Precision p) const {
  Device d;
  d.efficiency = 1.0;
  const char* want = precision_name(p);
  const std::vector<std::pair<double, double>>* curve = nullptr;
  for (const auto& [name, c] : gemm)
    if (name == want) curve = &c;
  for (const auto& [name, c] : gemm)  // fp16 without a curve of its own: widened to fp32
    if (!curve && p == Precision::fp16 && name == "fp32") curve = &c;
  if (!curve) throw Error(std::string("the profile has no GEMM rates for ") + want);
  d.gemm_gflops = *curve;
  for (const auto& pt : *curve) d.tflops = std::max(d.tflops, pt.second / 1e3);  // MFU's peak
  d.memory_gb = memory_gb_per_rank;
  if (cores_per_host > 0)
    d.oversubscription =
        std::max(1.0, static_cast<double>(ranks_per_host) * threads_per_rank / cores_per_host);
  d.memory_gbps = memory_gbps;
  d.page_fault_us = page_fault_us;
  d.tp_link_gbps = within.gbps;
  d.tp_latency_us = within.latency_us;
  const LinkProfile& across = between ? *between : within;
  d.link_gbps = across.gbps;
  d.latency_us = across.latency_us;
  return d;
}

nlohmann::json profile_to_json(const Profile& p) {
  nlohmann::json gemm = nlohmann::json::object();
  for (const auto& [name, curve] : p.gemm) {
    nlohmann::json& c = gemm[name] = nlohmann::json::array();
    for (const auto& [size, gflops] : curve) c.push_back({size, gflops});
  }
  return {{"format", kFormat},
          {"version", kProfileVersion},
          {"hosts", p.hosts},
          {"ranks", p.ranks},
          {"ranks_per_host", p.ranks_per_host},
          {"threads_per_rank", p.threads_per_rank},
          {"cores_per_host", p.cores_per_host},
          {"memory_gb_per_rank", p.memory_gb_per_rank},
          {"gemm", gemm},
          {"memory_gbps", p.memory_gbps},
          {"page_fault_us", p.page_fault_us},
          {"links",
           {{"within", link_json(p.within)},
            {"between", p.between ? link_json(*p.between) : nlohmann::json()}}},
          {"seconds", p.seconds}};
}

Profile read_profile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": no such profile (write one with parallama calibrate --out FILE)");
  std::stringstream text;
  text << in.rdbuf();
  auto bad = [&](const std::string& what) { return Error(path + ": " + what); };
  auto positive = [&](const nlohmann::json& v, const std::string& what) {
    const double x = v.get<double>();
    if (!(x > 0) || !std::isfinite(x)) throw bad(what + " is " + v.dump() + ", not positive");
    return x;
  };
  auto link = [&](const nlohmann::json& v, const std::string& what) {
    return LinkProfile{positive(v.at("latency_us"), what + ".latency_us"),
                       positive(v.at("gbps"), what + ".gbps")};
  };
  Profile p;
  try {
    const nlohmann::json j = nlohmann::json::parse(text.str());
    if (!j.is_object() || j.value("format", "") != std::string(kFormat))
      throw bad("not a parallama profile (no \"format\": \"parallama-profile\")");
    if (j.at("version") != kProfileVersion)
      throw bad("profile version " + j.at("version").dump() + "; this parallama reads version " +
                std::to_string(kProfileVersion) + " (measure again with parallama calibrate)");
    p.hosts = j.at("hosts").get<std::vector<std::string>>();
    p.ranks = j.at("ranks").get<int>();
    p.ranks_per_host = j.at("ranks_per_host").get<int>();
    p.threads_per_rank = j.at("threads_per_rank").get<int>();
    p.cores_per_host = j.value("cores_per_host", 0);
    if (p.cores_per_host < 0) throw bad("cores_per_host is negative");
    if (p.hosts.empty() || p.ranks < 1 || p.ranks_per_host < 1 || p.threads_per_rank < 1)
      throw bad("hosts, ranks, ranks_per_host and threads_per_rank must be positive");
    p.memory_gb_per_rank = positive(j.at("memory_gb_per_rank"), "memory_gb_per_rank");
    for (const auto& [name, c] : j.at("gemm").items()) {
      if (name != "fp32" && name != "bf16" && name != "fp16")
        throw bad("gemm." + name + ": not a precision (fp32, bf16, fp16)");
      auto& curve = p.gemm.emplace_back(name, std::vector<std::pair<double, double>>()).second;
      for (const auto& point : c) {
        if (!point.is_array() || point.size() != 2)
          throw bad("gemm." + name + ": not [size, gflops] pairs");
        const double size = positive(point[0], "gemm." + name + " size");
        if (!curve.empty() && size <= curve.back().first)
          throw bad("gemm." + name + ": sizes not increasing");
        curve.emplace_back(size, positive(point[1], "gemm." + name + " GFLOP/s"));
      }
      if (curve.empty()) throw bad("gemm." + name + ": no points");
    }
    if (p.gemm.empty()) throw bad("no GEMM rates");
    p.memory_gbps = positive(j.at("memory_gbps"), "memory_gbps");
    p.page_fault_us = j.value("page_fault_us", 0.0);
    if (!(p.page_fault_us >= 0) || !std::isfinite(p.page_fault_us))
      throw bad("page_fault_us is not a non-negative number");
    p.within = link(j.at("links").at("within"), "links.within");
    if (!j.at("links").at("between").is_null())
      p.between = link(j.at("links").at("between"), "links.between");
    p.seconds = j.value("seconds", 0.0);
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("malformed profile (") + e.what() + ")");
  }
  return p;
}

}  // namespace parallama
