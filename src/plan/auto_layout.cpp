#include "plan/auto_layout.h"

#include <algorithm>
#include <cstdio>

#include "tensor/error.h"

namespace parallama {

namespace {

std::vector<int64_t> divisors(int64_t n) {
  std::vector<int64_t> d;
  for (int64_t i = 1; i <= n; ++i)
    if (n % i == 0) d.push_back(i);
  return d;
}

// What the plan's step time is made of, on its slowest group: its compute, the exposed tp
// time, the bubble's share, the exposed dp time, the pipeline's fill and drain transfers.
Candidate rate(const Plan& p, const Device& device) {
  Candidate c;
  c.in = p.in;
  c.step_s = p.step_s;
  c.tokens_per_s = p.tokens_per_step / p.step_s;
  double busy = 0, compute = 0, tp = 0, dp = 0;
  for (const RankGroup& g : p.groups) {
    c.memory = std::max(c.memory,
                        g.memory() - g.state.grads + std::max(g.state.grads, g.grads_in_backward));
    if (g.compute_s + g.tp_exposed_s > busy)
      busy = g.compute_s + g.tp_exposed_s, compute = g.compute_s, tp = g.tp_exposed_s;
    dp = std::max(dp, g.dp_exposed_s);
  }
  const double bubble = p.bubble > 0 ? busy * p.bubble / (1 - p.bubble) : 0.0;
  const double terms[5] = {compute, tp, bubble, dp, p.pp_exposed_s};
  const char* names[5] = {"compute", "tp", "bubble", "dp", "pp"};
  int most = 0;
  for (int i = 0; i < 5; ++i) {
    c.terms[i] = terms[i];
    if (terms[i] > terms[most]) most = i;
  }
  c.dominant = names[most];
  c.fits = c.memory <= device.memory_gb * 1e9;
  return c;
}

}  // namespace

std::string layout_text(const PlanInput& in) {
  const MeshShape& s = in.shape;
  char pipe[64] = "";
  if (s.pp > 1)
    std::snprintf(pipe, sizeof pipe, " (v %d, %s)", s.pp_virtual, schedule_name(in.schedule));
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "dp %d x tp %d x pp %d%s, ZeRO-%d, %d micro-batch(es) of %lld, recompute %s, %s",
                s.dp, s.tp, s.pp, pipe, in.zero, in.micro_batches, static_cast<long long>(in.batch),
                recompute_name(in.recompute), precision_name(in.precision));
  return buf;
}

AutoResult search_layouts(const AutoInput& in, const Device& device) {
  if (in.ranks < 1 || in.ranks_per_host < 1 || in.ranks % in.ranks_per_host)
    throw Error("plan --auto: " + std::to_string(in.ranks) + " ranks do not divide into hosts of " +
                std::to_string(in.ranks_per_host));
  if (in.global_batch < 1) throw Error("plan --auto: the global batch must be at least 1");
  const LlamaConfig& m = in.base.model;
  AutoResult out;
  for (int64_t tp : divisors(in.ranks_per_host))
    for (int64_t pp : divisors(in.ranks / tp)) {
      if (pp > m.n_layers) continue;
      const int64_t dp = in.ranks / tp / pp;
      if (in.global_batch % dp) continue;
      const int64_t per_replica = in.global_batch / dp;
      for (int virt = 1; virt <= (pp > 1 ? in.max_virtual : 1); ++virt)
        for (int64_t b : divisors(per_replica))
          for (int zero = 0; zero <= (dp > 1 ? 2 : 0); ++zero)
            for (Recompute r : {Recompute::none, Recompute::attention, Recompute::full})
              for (Precision prec : in.precisions) {
                ++out.considered;
                PlanInput p = in.base;
                p.shape = MeshShape{};
                p.shape.dp = static_cast<int>(dp), p.shape.tp = static_cast<int>(tp);
                p.shape.pp = static_cast<int>(pp), p.shape.pp_virtual = virt;
                p.shape.seq_len = static_cast<int>(p.seq_len);
                p.schedule = virt > 1 ? PipeSchedule::Interleaved : PipeSchedule::OneFOneB;
                p.batch = b;
                p.micro_batches = static_cast<int>(per_replica / b);
                p.zero = zero;
                p.recompute = r;
                p.precision = prec;
                try {
                  out.valid.push_back(rate(make_plan(p, device), device));
                } catch (const Error&) {  // a layout this model does not divide into
                }
              }
    }
  std::stable_sort(out.valid.begin(), out.valid.end(), [](const Candidate& a, const Candidate& b) {
    if (a.fits != b.fits) return a.fits;
    return a.step_s < b.step_s;
  });
  return out;
}

}  // namespace parallama
