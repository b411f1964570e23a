// Activation recompute: the same gradients, bit for bit, with less activation memory.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "model/llama.h"
#include "tensor/error.h"
#include "test_util.h"

namespace parallama {

using test::TinyModel;

TEST(Recompute, GradientsAreBitIdenticalAndMemoryShrinks) {
  TinyModel m;
  const int64_t B = 3, T = 16;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(m.cfg.vocab_size - 1));
  std::vector<int32_t> tok(B * T), tgt(B * T);
  for (auto& x : tok) x = id(rng);
  for (auto& x : tgt) x = id(rng);
  ParamBuffer want(m.layout);
  size_t bytes[3] = {};
  const Recompute modes[] = {Recompute::none, Recompute::attention, Recompute::full};
  for (int k = 0; k < 3; ++k) {
    Llama model(m.layout, B, T, {}, modes[k]);
    ParamBuffer g(m.layout);
    // Two micro-batches, the second accumulating: recompute must not disturb accumulation.
    for (int rep = 0; rep < 2; ++rep) {
      model.forward(m.params, tok.data(), tgt.data());
      model.backward(m.params, g, 1.0f / (2 * B * T));
    }
    bytes[k] = model.activation_bytes();
    if (k == 0)
      std::memcpy(want.data(), g.data(), 4 * g.size());
    else
      EXPECT_EQ(0, std::memcmp(want.data(), g.data(), 4 * g.size())) << "mode " << k;
  }
  // attention drops (L - 1) layers' attention output and log-sum-exp (one layer's stay as
  // scratch); full keeps only each layer's input.
  EXPECT_LT(bytes[1], bytes[0]);
  EXPECT_LT(bytes[2], bytes[1]);
  const int64_t attn = (B * T * m.cfg.dim + B * m.cfg.n_heads * T) * 4;
  EXPECT_GE(bytes[0] - bytes[1], static_cast<size_t>((m.cfg.n_layers - 1) * attn));
}

TEST(Recompute, UnknownModeIsRefused) {
  EXPECT_NE(test::error_of([] { parse_recompute("some"); }).find("none, attention or full"),
            std::string::npos);
}

}  // namespace parallama
