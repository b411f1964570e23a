#include "train/stage_time.h"

#include <random>
#include <vector>

#include "model/llama.h"
#include "model/params.h"
#include "tensor/profile.h"

namespace parallama {

StageCosts measure_stage_costs(const RunConfig& cfg, comm::Group& group) {
  double costs[3] = {0, 0, 0};  // layer, embedding, head
  if (group.rank() == 0) {
    LlamaConfig one = cfg.model;
    one.n_layers = 1;
    const ParamLayout layout(one, ModelShard::whole(one));
    ParamBuffer params(layout), grads(layout);
    init_params(params, 1);
    const int64_t B = cfg.train.batch_size, T = cfg.train.seq_len;
    Llama model(layout, B, T, {}, cfg.train.recompute, cfg.train.precision);
    std::mt19937 rng(1);
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(one.vocab_size) - 1);
    std::vector<int32_t> tokens(B * T), targets(B * T);
    for (int64_t i = 0; i < B * T; ++i) tokens[i] = id(rng), targets[i] = id(rng);
    const float scale = 1.0f / static_cast<float>(B * T);
    constexpr int kSteps = 2;
    const bool was = prof::enabled();
    for (int s = -1; s < kSteps; ++s) {
      if (s == 0) prof::enable(true), prof::reset();  // after one warm-up step
      model.forward(params, tokens.data(), targets.data(), true);
      model.backward(params, grads, scale);
    }
    const prof::Report r = prof::report();
    prof::enable(was);
    auto part = [&](prof::Part p) { return r.part_s[static_cast<int>(p)] / (kSteps * B * T); };
    costs[0] = part(prof::Part::attention) + part(prof::Part::mlp);
    costs[1] = part(prof::Part::embedding);
    costs[2] = part(prof::Part::head);
  }
  group.broadcast(costs, 3, 0, DType::F64);
  return {costs[0], costs[1], costs[2]};
}

}  // namespace parallama
