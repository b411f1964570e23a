// Pieces of the Hugging Face converter: llama3 rotary scaling against the published formula, fp16
// conversions against the compiler's _Float16, F16 safetensors, config.json in and out, and the
// split of weights into files.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <random>

#include "io/hf.h"
#include "io/safetensors.h"
#include "kernels/rope.h"
#include "scratch_dir.h"
#include "tensor/f16.h"
#include "test_util.h"
#include "train/run_config.h"

namespace parallama {
namespace {

namespace fs = std::filesystem;
using test::error_of;

// The llama3 frequencies as Meta's reference (apply_scaling of Llama 3.1) defines them, in double:
// wavelengths shorter than old_len / high keep their frequency, longer than old_len / low are
// divided by factor, and those in between blend the two linearly in old_len / wavelength.
double llama3_freq(int i, int D, double theta, double factor, double low, double high,
                   double old_len) {
  const double f = std::pow(theta, -2.0 * i / D);
  const double wavelen = 2 * std::numbers::pi / f;
  if (wavelen < old_len / high) return f;
  if (wavelen > old_len / low) return f / factor;
  const double smooth = (old_len / wavelen - low) / (high - low);
  return (1 - smooth) * f / factor + smooth * f;
}

TEST(RopeScaling, Llama3MatchesThePublishedFormula) {
  // Llama 3.1 8B's settings, and a small original context that puts frequencies in every band.
  struct Case {
    int D;
    float theta, factor, low, high;
    int old_len;
  };
  for (const Case& c :
       {Case{128, 500000.0f, 8.0f, 1.0f, 4.0f, 8192}, Case{16, 10000.0f, 4.0f, 1.0f, 4.0f, 64},
        Case{64, 10000.0f, 2.0f, 2.0f, 8.0f, 256}}) {
    kernels::RopeScaling s;
    s.type = kernels::RopeType::llama3, s.factor = c.factor, s.low_freq_factor = c.low;
    s.high_freq_factor = c.high, s.original_max_len = c.old_len;
    std::vector<float> got(c.D / 2), plain(c.D / 2);
    kernels::rope_inv_freq(got.data(), c.D, c.theta, s);
    kernels::rope_inv_freq(plain.data(), c.D, c.theta);
    int kept = 0, divided = 0, blended = 0;
    for (int i = 0; i < c.D / 2; ++i) {
      const double want = llama3_freq(i, c.D, c.theta, c.factor, c.low, c.high, c.old_len);
      EXPECT_NEAR(got[i], want, 2e-6 * want) << "D " << c.D << " i " << i;
      const double ratio = got[i] / plain[i];
      if (std::abs(ratio - 1) < 1e-6)
        ++kept;
      else if (std::abs(ratio * c.factor - 1) < 1e-6)
        ++divided;
      else
        ++blended;
    }
    EXPECT_GT(kept, 0);
    EXPECT_GT(divided, 0);
    EXPECT_GT(blended, 0) << "D " << c.D;
    // The table holds cos and sin of position times the scaled frequency.
    const int64_t T = 300, half = c.D / 2;
    std::vector<float> cs(T * half), sn(T * half);
    kernels::rope_table(cs.data(), sn.data(), T, c.D, c.theta, 0, s);
    for (int64_t t : {0, 1, 77, 299})
      for (int64_t i = 0; i < half; ++i) {
        const double a = static_cast<double>(t) * got[i];
        EXPECT_NEAR(cs[t * half + i], std::cos(a), 2e-5) << t << " " << i;
        EXPECT_NEAR(sn[t * half + i], std::sin(a), 2e-5) << t << " " << i;
      }
  }
}

TEST(RopeScaling, NoneKeepsThePlainTable) {
  const int64_t T = 40, D = 32;
  std::vector<float> a(T * D / 2), b(T * D / 2), sa(T * D / 2), sb(T * D / 2);
  kernels::rope_table(a.data(), sa.data(), T, D, 10000.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D / 2; ++i) {
      const float inv = 1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / D);
      b[t * D / 2 + i] = std::cos(static_cast<float>(t) * inv);
      sb[t * D / 2 + i] = std::sin(static_cast<float>(t) * inv);
    }
  EXPECT_EQ(a, b);
  EXPECT_EQ(sa, sb);
}

TEST(Fp16, WidensEveryValueExactlyAndNarrowsBack) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    _Float16 ref;
    std::memcpy(&ref, &bits, 2);
    const float f = f16_to_float(bits);
    if (std::isnan(static_cast<float>(ref))) {
      EXPECT_TRUE(std::isnan(f));
      EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f, static_cast<float>(ref)) << std::hex << h;
    ASSERT_EQ(float_to_f16(f), bits) << std::hex << h;
  }
}

TEST(Fp16, NarrowsToNearestEvenAsTheCompilerDoes) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_real_distribution<float> exps(-30.0f, 20.0f);
  for (int n = 0; n < 2000000; ++n) {
    float f;
    if (n % 2) {  // any bit pattern, and values around fp16's range
      const uint32_t u = bits(rng);
      std::memcpy(&f, &u, 4);
    } else {
      f = std::ldexp(1.0f + (bits(rng) >> 9) * 0x1p-23f, static_cast<int>(exps(rng)));
      if (n % 4 == 0) f = -f;
    }
    const _Float16 ref = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &ref, 2);
    if (std::isnan(f)) {
      EXPECT_EQ(float_to_f16(f) & 0x7e00, 0x7e00);
      continue;
    }
    ASSERT_EQ(float_to_f16(f), want) << f;
  }
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(float_to_f16(-1e9f), 0xfc00);
}

class HfFiles : public test::ScratchDirTest {};

TEST_F(HfFiles, F16TensorsWriteAndReadBack) {
  const std::vector<float> x = {0.0f, -1.5f, 65504.0f, 1e-7f, 3.14159f, -0.0001f};
  {
    io::SafeTensorsStreamWriter w(file("h.safetensors"), {{"x", {2, 3}, DType::F16}});
    w.append("x", x.data(), 6);
    w.commit();
  }
  io::SafeTensorsReader r(file("h.safetensors"));
  EXPECT_EQ(r.info("x").dtype, DType::F16);
  std::vector<float> got(6), row(3);
  r.read_f32("x", got.data(), {2, 3});
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(got[i], f16_to_float(float_to_f16(x[i])));
  r.read_f32_slice("x", row.data(), {2, 3}, 0, 1, 1);
  EXPECT_EQ(row, std::vector<float>(got.begin() + 3, got.end()));
}

TEST(Fp16, OverflowIsWhatRoundsToInfinity) {
  EXPECT_FALSE(f16_overflows(65504.0f));
  EXPECT_FALSE(f16_overflows(65519.99f));  // rounds down to 65504
  EXPECT_TRUE(f16_overflows(65520.0f));
  EXPECT_TRUE(f16_overflows(-1e30f));
  EXPECT_FALSE(f16_overflows(INFINITY));  // not finite to begin with: kept as it is
  EXPECT_FALSE(f16_overflows(NAN));
  for (float x : {65519.99f, 65520.0f, 1e6f, -70000.0f})
    EXPECT_EQ(f16_overflows(x), float_to_f16(x) == (x > 0 ? 0x7c00 : 0xfc00)) << x;
  std::vector<float> v = {1e5f, -1e5f, 3.0f, INFINITY};
  clamp_f16_overflow(v.data(), 4);
  EXPECT_EQ(v, (std::vector<float>{65504.0f, -65504.0f, 3.0f, INFINITY}));
}

TEST_F(HfFiles, F16RangeIsCheckedOverEveryTensor) {
  std::vector<float> a(300, 1.0f), b(40, -2.0f);
  a[0] = 7e4f, a[299] = -1e9f, b[3] = 65520.0f;
  io::SafeTensorsWriter w;
  w.add("a", a.data(), {3, 100});
  w.add("b", b.data(), {40});
  w.write(file("m.safetensors"));
  const io::SafeTensorsReader r(file("m.safetensors"));
  const std::string e = error_of([&] {
    io::check_f16_range(r, {{"a", {3, 100}}, {"b", {40}}}, false);
  });
  EXPECT_NE(e.find("3 value(s) beyond fp16's range"), std::string::npos) << e;
  EXPECT_NE(e.find("a (2), b (1)"), std::string::npos) << e;
  EXPECT_NE(error_of([&] {
              io::check_f16_range(r, {{"b", {40}}}, false);
            }).find("b (1)"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(error_of([&] { io::check_f16_range(r, {{"a", {3, 100}}}, true); }), "");
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("warning: "), std::string::npos);
}

nlohmann::json llama31_config() {
  return nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false,
    "hidden_act": "silu", "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}})");
}

TEST(HfConfig, ReadsLlama31AndWritesTheSameValues) {
  const io::HfConfig c = io::parse_hf_config(llama31_config(), "config.json");
  EXPECT_EQ(c.model.dim, 4096);
  EXPECT_EQ(c.model.n_kv_heads, 8);
  EXPECT_EQ(c.model.ffn_dim, 14336);
  EXPECT_EQ(c.model.max_seq_len, 131072);
  EXPECT_EQ(c.model.rope_scaling.type, kernels::RopeType::llama3);
  EXPECT_EQ(c.model.rope_scaling.original_max_len, 8192);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  const nlohmann::json out =
      nlohmann::json::parse(io::hf_config_json(c.model, "bfloat16", 1, 2).dump());
  const nlohmann::json in = llama31_config();
  for (const auto& [key, v] : in.items()) EXPECT_EQ(out[key], v) << key;
  EXPECT_EQ(out.dump().find("9.99999"), std::string::npos);  // 1e-05, not its float's digits
}

TEST(HfConfig, RefusesWhatItCannotConvert) {
  auto err = [](const char* key, nlohmann::json v) {
    nlohmann::json j = llama31_config();
    if (v.is_discarded())
      j.erase(key);
    else
      j[key] = v;
    return error_of([&] { io::parse_hf_config(j, "config.json"); });
  };
  const auto discard = nlohmann::json(nlohmann::json::value_t::discarded);
  EXPECT_EQ(err("rope_scaling", {{"type", "linear"}, {"factor", 2.0}}),
            "config.json: rope_scaling type 'linear' is not supported (parallama implements "
            "llama3 rope scaling only)");
  EXPECT_NE(err("rope_scaling", {{"rope_type", "yarn"}}).find("'yarn'"), std::string::npos);
  EXPECT_NE(err("architectures", {"MistralForCausalLM"}).find("MistralForCausalLM"),
            std::string::npos);
  EXPECT_NE(err("hidden_size", discard).find("no \"hidden_size\""), std::string::npos);
  EXPECT_NE(err("hidden_size", "4096").find("not a positive integer"), std::string::npos);
  EXPECT_NE(err("attention_bias", true).find("no biases"), std::string::npos);
  EXPECT_NE(err("num_key_value_heads", 5).find("not a multiple"), std::string::npos);
  EXPECT_NE(err("head_dim", 64).find("head_dim 64"), std::string::npos);
  // No rope_scaling, or its "default" type, is plain rotary embedding.
  EXPECT_EQ(err("rope_scaling", nullptr), "");
  EXPECT_EQ(err("rope_scaling", {{"rope_type", "default"}}), "");
}

TEST(HfConfig, RopeScalingIsPartOfTheRunConfig) {
  const RunConfig c = parse_run_config_text(
      "[model]\nrope_scaling = \"llama3\"\nrope_factor = 4.0\nrope_original_max_len = 64\n",
      "t.toml", {}, ConfigUse::model);
  EXPECT_EQ(c.model.rope_scaling.type, kernels::RopeType::llama3);
  EXPECT_EQ(c.model.rope_scaling.factor, 4.0f);
  EXPECT_EQ(config_from_json(config_to_json(c), "j", ConfigUse::model)
                .model.rope_scaling.original_max_len,
            64);
  EXPECT_NE(error_of([] {
              parse_run_config_text("[model]\nrope_scaling = \"yarn\"\n", "t", {},
                                    ConfigUse::model);
            }).find("rope_scaling 'yarn' is not supported"),
            std::string::npos);
  // A blank shape: every key given.
  EXPECT_NE(error_of([] {
              parse_run_config_text("[model]\npreset = \"custom\"\n", "t", {}, ConfigUse::model);
            }).find("dim must be positive"),
            std::string::npos);
}

TEST(HfShards, SplitAtTheLimitWithLargeTensorsAlone) {
  const std::vector<io::TensorDecl> t = {{"a", {10}, DType::F32},
                                         {"b", {20}, DType::F32},
                                         {"c", {100}, DType::BF16},
                                         {"d", {5}, DType::F32}};
  auto one = io::plan_hf_shards(t, 1000);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].file, "model.safetensors");
  EXPECT_EQ(one[0].bytes, 40u + 80 + 200 + 20);
  auto split = io::plan_hf_shards(t, 150);
  ASSERT_EQ(split.size(), 3u);
  EXPECT_EQ(split[0].file, "model-00001-of-00003.safetensors");
  EXPECT_EQ(split[0].tensors.size(), 2u);  // a, b: 120 bytes
  EXPECT_EQ(split[1].bytes, 200u);         // c alone, larger than the limit
  EXPECT_EQ(split[2].tensors[0].name, "d");
  const auto index = io::hf_index_json(split);
  EXPECT_EQ(index["metadata"]["total_size"], 340);
  EXPECT_EQ(index["weight_map"]["c"], "model-00002-of-00003.safetensors");
}

}  // namespace
}  // namespace parallama
