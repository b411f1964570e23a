#include "train/auto_run.h"

#include <algorithm>
#include <cstdio>

#include "comm/launcher.h"
#include "plan/auto_layout.h"
#include "plan/profile.h"
#include "tensor/error.h"
#include "train/calibrate.h"
#include "train/step.h"

namespace parallama {

std::optional<Device> run_device(const RunConfig& cfg, comm::Group& world,
                                 const std::string& profile, bool measure) {
  const Precision p = cfg.train.precision;
  if (!profile.empty()) return read_profile(profile).device(p);
  if (!measure) return std::nullopt;
  return calibrate(world, &cfg.model, p).device(p);
}

std::vector<std::pair<std::string, std::string>> auto_layout(const RunConfig& cfg,
                                                             comm::Group& world,
                                                             const Device& device) {
  const ParallelConfig& par = cfg.parallel;
  if (par.strategy.sync != Sync::allreduce)
    throw Error(std::string("--layout auto plans --sync allreduce, not --sync ") +
                sync_name(par.strategy.sync));
  if (par.layout.tp != 1 || par.layout.pp != 1 || par.grads.zero != 0 || par.layout.pp_virtual != 1)
    throw Error(
        "--layout auto chooses dp, tp, pp, ZeRO and the micro-batches itself: give none of "
        "--tp, --pp, --zero, parallel.pp_virtual");
  AutoInput a;
  a.base = plan_input(cfg);
  a.base.precision = cfg.train.precision;
  a.ranks = world.size();
  a.ranks_per_host = std::min(comm::local_ranks(), a.ranks);
  if (a.ranks % a.ranks_per_host) a.ranks_per_host = 1;  // uneven hosts: tp stays within a rank
  a.global_batch =
      static_cast<int64_t>(par.layout.dp) * cfg.train.batch_size * cfg.train.micro_batches;
  const AutoResult r = search_layouts(a, device);
  if (r.valid.empty() || !r.valid.front().fits)
    throw Error("--layout auto: no layout of " + std::to_string(a.ranks) + " rank(s) fits in " +
                std::to_string(device.memory_gb) + " GB per rank");
  const Candidate& best = r.valid.front();
  if (world.rank() == 0) {
    std::printf("layout auto: %s: predicted %.4f s a step, %.0f tokens/s, %.3f GB per rank (%s)\n",
                layout_text(best.in).c_str(), best.step_s, best.tokens_per_s, best.memory / 1e9,
                best.dominant.c_str());
    if (r.valid.size() > 1 && r.valid[1].fits)
      std::printf("runner-up: %s: predicted %.4f s a step, %.0f tokens/s\n",
                  layout_text(r.valid[1].in).c_str(), r.valid[1].step_s, r.valid[1].tokens_per_s);
  }
  const PlanInput& in = best.in;
  return {{"parallel.dp", std::to_string(in.shape.dp)},
          {"parallel.tp", std::to_string(in.shape.tp)},
          {"parallel.pp", std::to_string(in.shape.pp)},
          {"parallel.pp_virtual", std::to_string(in.shape.pp_virtual)},
          {"parallel.pp_schedule", schedule_name(in.schedule)},
          {"parallel.zero", std::to_string(in.zero)},
          {"train.batch_size", std::to_string(in.batch)},
          {"train.micro_batches", std::to_string(in.micro_batches)},
          {"train.recompute", recompute_name(in.recompute)}};
}

nlohmann::json prediction_json(const RunConfig& cfg, const std::optional<Device>& device,
                               double measured_step_s, const std::vector<double>& memory_per_rank,
                               std::string* line) {
  PlanInput in = plan_input(cfg);
  in.precision = cfg.train.precision;
  const Plan plan = make_plan(in, device ? *device : Device{});
  std::vector<double> predicted(memory_per_rank.size(), 0.0);
  for (size_t r = 0; r < predicted.size() && r < plan.group_of_rank.size(); ++r)
    predicted[r] = plan.groups[plan.group_of_rank[r]].memory();
  const double pm = *std::max_element(predicted.begin(), predicted.end());
  const double mm = *std::max_element(memory_per_rank.begin(), memory_per_rank.end());
  nlohmann::json j;
  j["predicted"]["memory_bytes"] = predicted;
  j["measured"]["memory_bytes"] = memory_per_rank;
  j["measured"]["step_s"] = measured_step_s;
  j["ratio"]["memory_bytes"] = pm > 0 ? mm / pm : 0.0;
  char buf[320];
  if (device) {
    j["predicted"]["step_s"] = plan.step_s;
    j["ratio"]["step_s"] = measured_step_s / plan.step_s;
    std::snprintf(buf, sizeof buf,
                  "prediction: step %.4f s, measured %.4f s (x%.3f); memory %.1f MB on the "
                  "largest rank, measured %.1f MB (x%.3f)",
                  plan.step_s, measured_step_s, measured_step_s / plan.step_s, pm / 1e6, mm / 1e6,
                  pm > 0 ? mm / pm : 0.0);
  } else {
    j["predicted"]["step_s"] = nullptr;
    j["ratio"]["step_s"] = nullptr;
    std::snprintf(buf, sizeof buf,
                  "prediction: memory %.1f MB on the largest rank, measured %.1f MB (x%.3f); step "
                  "time not predicted (give --profile FILE from parallama calibrate)",
                  pm / 1e6, mm / 1e6, pm > 0 ? mm / pm : 0.0);
  }
  *line = buf;
  return j;
}

}  // namespace parallama
