// GGUF export, read back by a minimal reader of its own: the header, every key-value pair, tensor
// offsets and alignment, F32 values exactly, the q/k row permutation (against its formula, and as
// the rotary convention change it stands for), Q8_0 within its error bound, the F16 fallback,
// and rope_freqs for llama3 scaling.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <variant>

#include "data/tokenizer.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "kernels/rope.h"
#include "model/params.h"
#include "scratch_dir.h"
#include "tensor/f16.h"
#include "test_util.h"

namespace parallama {
namespace {

namespace fs = std::filesystem;

// --- a reader written from the format's description, sharing no code with the writer --------

using Value = std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<std::string>,
                           std::vector<double>>;

struct GgufTensor {
  std::vector<uint64_t> ne;  // innermost first
  uint32_t type = 0;
  uint64_t offset = 0;
};

struct GgufFile {
  uint32_t version = 0;
  std::map<std::string, Value> kv;
  std::vector<std::string> order;  // tensor names in file order
  std::map<std::string, GgufTensor> tensors;
  uint64_t data_start = 0;
  std::string bytes;

  const uint8_t* data(const std::string& name) const {
    return reinterpret_cast<const uint8_t*>(bytes.data() + data_start + tensors.at(name).offset);
  }
  uint64_t u(const std::string& k) const { return std::get<uint64_t>(kv.at(k)); }
  std::string s(const std::string& k) const { return std::get<std::string>(kv.at(k)); }
};

class Cursor {
 public:
  explicit Cursor(const std::string& b) : b_(b) {}
  template <typename T>
  T get() {
    if (at_ + sizeof(T) > b_.size()) throw std::runtime_error("truncated");
    T v;
    std::memcpy(&v, b_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  std::string str() {
    const auto n = get<uint64_t>();
    if (at_ + n > b_.size()) throw std::runtime_error("truncated string");
    std::string s = b_.substr(at_, n);
    at_ += n;
    return s;
  }
  // One value of GGUF type t, widened: integers to u64 / i64, floats to double.
  Value scalar(uint32_t t) {
    switch (t) {
      case 0:
        return uint64_t{get<uint8_t>()};
      case 1:
        return int64_t{get<int8_t>()};
      case 2:
        return uint64_t{get<uint16_t>()};
      case 3:
        return int64_t{get<int16_t>()};
      case 4:
        return uint64_t{get<uint32_t>()};
      case 5:
        return int64_t{get<int32_t>()};
      case 6:
        return double{get<float>()};
      case 7:
        return get<uint8_t>() != 0;
      case 8:
        return str();
      case 10:
        return get<uint64_t>();
      case 11:
        return get<int64_t>();
      case 12:
        return get<double>();
    }
    throw std::runtime_error("bad value type " + std::to_string(t));
  }
  uint64_t at() const { return at_; }

 private:
  const std::string& b_;
  uint64_t at_ = 0;
};

GgufFile read_gguf(const std::string& path) {
  GgufFile g;
  std::ifstream in(path, std::ios::binary);
  g.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  Cursor c(g.bytes);
  if (g.bytes.compare(0, 4, "GGUF") != 0) throw std::runtime_error("no magic");
  c.get<uint32_t>();
  g.version = c.get<uint32_t>();
  const auto n_tensors = c.get<uint64_t>(), n_kv = c.get<uint64_t>();
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = c.str();
    const auto type = c.get<uint32_t>();
    if (type != 9) {
      g.kv[key] = c.scalar(type);
      continue;
    }
    const auto et = c.get<uint32_t>();
    const auto n = c.get<uint64_t>();
    std::vector<std::string> strs;
    std::vector<double> nums;
    for (uint64_t k = 0; k < n; ++k) {
      const Value v = c.scalar(et);
      if (const auto* s = std::get_if<std::string>(&v))
        strs.push_back(*s);
      else if (const auto* d = std::get_if<double>(&v))
        nums.push_back(*d);
      else if (const auto* i = std::get_if<int64_t>(&v))
        nums.push_back(static_cast<double>(*i));
      else
        nums.push_back(static_cast<double>(std::get<uint64_t>(v)));
    }
    if (et == 8)
      g.kv[key] = strs;
    else
      g.kv[key] = nums;
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const std::string name = c.str();
    GgufTensor t;
    const auto nd = c.get<uint32_t>();
    for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(c.get<uint64_t>());
    t.type = c.get<uint32_t>();
    t.offset = c.get<uint64_t>();
    g.order.push_back(name);
    g.tensors[name] = t;
  }
  const uint64_t align = g.u("general.alignment");
  g.data_start = (c.at() + align - 1) / align * align;
  for (uint64_t p = c.at(); p < g.data_start; ++p)
    if (g.bytes[p] != 0) throw std::runtime_error("padding is not zeros");
  return g;
}

uint64_t count_of(const GgufTensor& t) {
  uint64_t n = 1;
  for (uint64_t d : t.ne) n *= d;
  return n;
}
uint64_t nbytes_of(const GgufTensor& t) {
  const uint64_t n = count_of(t);
  return t.type == 0 ? 4 * n : t.type == 1 ? 2 * n : n / 32 * 34;
}

// The values of a tensor, whatever its type (Q8_0 decoded here from the block layout).
std::vector<float> values(const GgufFile& g, const std::string& name) {
  const GgufTensor& t = g.tensors.at(name);
  const uint8_t* p = g.data(name);
  std::vector<float> v(count_of(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.type == 0) {
      std::memcpy(&v[i], p + 4 * i, 4);
    } else if (t.type == 1) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      v[i] = f16_to_float(h);
    } else {
      const uint8_t* block = p + (i / 32) * 34;
      uint16_t h;
      std::memcpy(&h, block, 2);
      v[i] = f16_to_float(h) * static_cast<int8_t>(block[2 + i % 32]);
    }
  }
  return v;
}

// --- a tiny checkpoint -------------------------------------------------------------------

class GgufExport : public test::ScratchDirTest {
 protected:
  void SetUp() override {
    ScratchDirTest::SetUp();
    std::vector<std::string> lines;
    for (int i = 0; i < 300; ++i)
      lines.push_back("In the beginning God created the heaven and the earth " + std::to_string(i) +
                      (i % 2 ? " and it was good." : " Let there be light."));
    std::ofstream(file("tokenizer.model"), std::ios::binary) << Tokenizer::train(lines, 320);
    m_.dim = 64, m_.n_layers = 2, m_.n_heads = 4, m_.n_kv_heads = 2, m_.ffn_dim = 80;
    m_.vocab_size = 330, m_.max_seq_len = 32, m_.norm_eps = 1e-5f, m_.rope_theta = 10000.0f;
  }

  // Random weights for m_ in model.safetensors (norms around 1); returns them by name.
  std::map<std::string, std::vector<float>> write_weights() {
    std::map<std::string, std::vector<float>> w;
    io::SafeTensorsWriter out;
    const ParamLayout layout(m_, ModelShard::whole(m_));
    uint32_t seed = 1;
    for (const ParamSpec& s : layout.specs()) {
      auto v = test::randn(numel(s.full_shape), seed++, 0.5f);
      if (s.kind == ParamKind::Norm)
        for (float& x : v) x = 1.0f + 0.1f * x;
      w[s.name] = std::move(v);
    }
    for (const ParamSpec& s : layout.specs()) out.add(s.name, w[s.name].data(), s.full_shape);
    out.write(file("model.safetensors"));
    return w;
  }
  GgufFile export_as(io::GgmlType type, const std::string& name) {
    io::GgufModelInfo info;
    info.name = "tiny-test";
    info.tokenizer_path = file("tokenizer.model");
    io::write_llama_gguf(m_, io::SafeTensorsReader(file("model.safetensors")), info, file(name),
                         type);
    return read_gguf(file(name));
  }
  LlamaConfig m_;
};

TEST_F(GgufExport, HeaderMetadataAndLayout) {
  write_weights();
  const GgufFile g = export_as(io::GgmlType::F32, "m.gguf");
  EXPECT_EQ(g.version, 3u);
  EXPECT_EQ(g.s("general.architecture"), "llama");
  EXPECT_EQ(g.s("general.name"), "tiny-test");
  EXPECT_EQ(g.u("general.file_type"), 0u);
  EXPECT_EQ(g.u("general.alignment"), 32u);
  EXPECT_EQ(g.u("llama.context_length"), 32u);
  EXPECT_EQ(g.u("llama.embedding_length"), 64u);
  EXPECT_EQ(g.u("llama.block_count"), 2u);
  EXPECT_EQ(g.u("llama.feed_forward_length"), 80u);
  EXPECT_EQ(g.u("llama.rope.dimension_count"), 16u);
  EXPECT_EQ(g.u("llama.attention.head_count"), 4u);
  EXPECT_EQ(g.u("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(g.u("llama.vocab_size"), 330u);
  EXPECT_FLOAT_EQ(std::get<double>(g.kv.at("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_EQ(std::get<double>(g.kv.at("llama.rope.freq_base")), 10000.0);
  EXPECT_EQ(g.s("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(g.u("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(g.u("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(g.u("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_TRUE(std::get<bool>(g.kv.at("tokenizer.ggml.add_bos_token")));
  EXPECT_FALSE(std::get<bool>(g.kv.at("tokenizer.ggml.add_eos_token")));
  EXPECT_TRUE(std::get<bool>(g.kv.at("tokenizer.ggml.add_space_prefix")));

  // 320 pieces, then 10 unused rows up to the model's vocabulary.
  const auto& tokens = std::get<std::vector<std::string>>(g.kv.at("tokenizer.ggml.tokens"));
  const auto& types = std::get<std::vector<double>>(g.kv.at("tokenizer.ggml.token_type"));
  const auto& scores = std::get<std::vector<double>>(g.kv.at("tokenizer.ggml.scores"));
  ASSERT_EQ(tokens.size(), 330u);
  ASSERT_EQ(types.size(), 330u);
  ASSERT_EQ(scores.size(), 330u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(types[0], 2);  // unknown
  EXPECT_EQ(types[1], 3);  // control
  EXPECT_EQ(types[2], 3);
  EXPECT_EQ(tokens[3], "<0x00>");  // byte fallback pieces
  EXPECT_EQ(tokens[258], "<0xFF>");
  for (int i = 3; i < 259; ++i) EXPECT_EQ(types[i], 6) << i;
  for (int i = 259; i < 320; ++i) EXPECT_EQ(types[i], 1) << i;
  for (int i = 320; i < 330; ++i) EXPECT_EQ(types[i], 5) << i;
  EXPECT_GT(scores[259], scores[319]);  // BPE merges in order of score

  // Tensors: the llama.cpp names, shapes innermost first, offsets aligned and packed in order.
  ASSERT_EQ(g.order.size(), 1u + 2 * 9 + 2);
  EXPECT_EQ(g.order.front(), "token_embd.weight");
  EXPECT_EQ(g.order[1], "blk.0.attn_norm.weight");
  EXPECT_EQ(g.order.back(), "output.weight");
  EXPECT_EQ(g.tensors.at("token_embd.weight").ne, (std::vector<uint64_t>{64, 330}));
  EXPECT_EQ(g.tensors.at("blk.1.attn_k.weight").ne, (std::vector<uint64_t>{64, 32}));
  EXPECT_EQ(g.tensors.at("blk.1.ffn_down.weight").ne, (std::vector<uint64_t>{80, 64}));
  EXPECT_EQ(g.tensors.at("output_norm.weight").ne, (std::vector<uint64_t>{64}));
  EXPECT_EQ(g.data_start % 32, 0u);
  uint64_t end = 0;
  for (const std::string& name : g.order) {
    const GgufTensor& t = g.tensors.at(name);
    EXPECT_EQ(t.type, 0u) << name;
    EXPECT_EQ(t.offset % 32, 0u) << name;
    EXPECT_EQ(t.offset, (end + 31) / 32 * 32) << name;
    end = t.offset + nbytes_of(t);
  }
  EXPECT_EQ(g.bytes.size(), g.data_start + (end + 31) / 32 * 32);
}

TEST_F(GgufExport, F32ValuesAndTheQkPermutation) {
  const auto w = write_weights();
  const GgufFile g = export_as(io::GgmlType::F32, "m.gguf");
  EXPECT_EQ(values(g, "token_embd.weight"), w.at("model.embed_tokens.weight"));
  EXPECT_EQ(values(g, "blk.1.attn_v.weight"), w.at("model.layers.1.self_attn.v_proj.weight"));
  EXPECT_EQ(values(g, "blk.0.ffn_norm.weight"),
            w.at("model.layers.0.post_attention_layernorm.weight"));
  EXPECT_EQ(values(g, "output.weight"), w.at("lm_head.weight"));
  const int64_t C = 64, D = 16;
  for (const auto& [hf, gg, heads] :
       {std::tuple{"model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight", 4},
        std::tuple{"model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight", 2}}) {
    const std::vector<float> a = w.at(hf), b = values(g, gg);
    // Head h, pair i, member j: llama.cpp's row h·D + 2i + j is HF's row h·D + j·D/2 + i.
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < D / 2; ++i)
        for (int j = 0; j < 2; ++j)
          for (int c = 0; c < C; ++c)
            ASSERT_EQ(b[(h * D + 2 * i + j) * C + c], a[(h * D + j * D / 2 + i) * C + c])
                << gg << " head " << h << " pair " << i << " member " << j;
  }
  // What the permutation is for: a query and key rotated the HF way (pairs i, i + D/2) and their
  // permuted rows rotated the llama.cpp way (pairs 2i, 2i + 1) give the same attention score.
  const auto x = test::randn(C, 99), y = test::randn(C, 98);
  const std::vector<float> wq = w.at("model.layers.1.self_attn.q_proj.weight");
  const std::vector<float> wk = w.at("model.layers.1.self_attn.k_proj.weight");
  const std::vector<float> gq = values(g, "blk.1.attn_q.weight");
  const std::vector<float> gk = values(g, "blk.1.attn_k.weight");
  auto row_dot = [&](const std::vector<float>& m, int64_t r, const std::vector<float>& v) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += double(m[r * C + c]) * v[c];
    return s;
  };
  std::vector<float> inv(D / 2);
  kernels::rope_inv_freq(inv.data(), D, 10000.0f);
  const int pq = 7, pk = 3;  // positions of query and key
  double hf_score = 0, gg_score = 0;
  for (int i = 0; i < D / 2; ++i) {  // head 0 of q against head 0 of k
    const double aq = pq * double(inv[i]), ak = pk * double(inv[i]);
    const double q1 = row_dot(wq, i, x), q2 = row_dot(wq, i + D / 2, x);
    const double k1 = row_dot(wk, i, y), k2 = row_dot(wk, i + D / 2, y);
    const double g1 = row_dot(gq, 2 * i, x), g2 = row_dot(gq, 2 * i + 1, x);
    const double h1 = row_dot(gk, 2 * i, y), h2 = row_dot(gk, 2 * i + 1, y);
    auto rot = [](double a, double b, double ang, double& ra, double& rb) {
      ra = a * std::cos(ang) - b * std::sin(ang);
      rb = a * std::sin(ang) + b * std::cos(ang);
    };
    double r1, r2, s1, s2;
    rot(q1, q2, aq, r1, r2);
    rot(k1, k2, ak, s1, s2);
    hf_score += r1 * s1 + r2 * s2;
    rot(g1, g2, aq, r1, r2);
    rot(h1, h2, ak, s1, s2);
    gg_score += r1 * s1 + r2 * s2;
  }
  EXPECT_NEAR(gg_score, hf_score, 1e-9 * std::abs(hf_score));
  for (int64_t r = 0; r < 32; ++r)
    EXPECT_EQ(io::gguf_qk_source_row(r, D), (r / D) * D + (r % 2) * (D / 2) + (r % D) / 2);
}

TEST_F(GgufExport, Q8ZeroWithinItsBoundAndF16Fallback) {
  const auto w = write_weights();
  const GgufFile g = export_as(io::GgmlType::Q8_0, "q.gguf");
  EXPECT_EQ(g.u("general.file_type"), 7u);
  EXPECT_EQ(g.tensors.at("token_embd.weight").type, 8u);
  EXPECT_EQ(g.tensors.at("blk.0.attn_q.weight").type, 8u);
  EXPECT_EQ(g.tensors.at("blk.0.attn_norm.weight").type, 0u);  // norms stay F32
  EXPECT_EQ(g.tensors.at("blk.0.ffn_down.weight").type, 1u);   // rows of 80: F16
  const std::vector<float> x = w.at("model.embed_tokens.weight"),
                           q = values(g, "token_embd.weight");
  double worst = 0;
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0;
    for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[b * 32 + i]));
    // Rounding to the grid of d = amax / 127 is off by d / 2 at most; storing d in fp16 moves the
    // grid by at most 127 · |d - fp16(d)| <= 127 · d · 2^-11.
    const double d = amax / 127.0, bound = d / 2 + 127 * d * std::ldexp(1.0, -11) + 1e-12;
    for (size_t i = 0; i < 32; ++i) {
      const double err = std::abs(double(q[b * 32 + i]) - x[b * 32 + i]);
      ASSERT_LE(err, bound) << "block " << b << " value " << i;
      worst = std::max(worst, err / d);
    }
  }
  EXPECT_GT(worst, 0.3);  // really quantized
  const std::vector<float> down = w.at("model.layers.0.mlp.down_proj.weight");
  const std::vector<float> got = values(g, "blk.0.ffn_down.weight");
  for (size_t i = 0; i < down.size(); ++i) ASSERT_EQ(got[i], f16_to_float(float_to_f16(down[i])));
  // The writer's own round trip agrees with the block layout read here.
  std::vector<uint8_t> blocks(io::ggml_nbytes(io::GgmlType::Q8_0, 64));
  std::vector<float> back(64);
  io::quantize_q8_0(x.data(), 64, blocks.data());
  io::dequantize_q8_0(blocks.data(), 64, back.data());
  EXPECT_EQ(back, std::vector<float>(q.begin(), q.begin() + 64));
}

// Values fp16 cannot hold are refused before anything is written, naming the tensor and the
// count; --allow-overflow clamps them to ±65504.
TEST_F(GgufExport, F16OverflowIsRefusedOrClamped) {
  auto w = write_weights();
  std::vector<float>& down = w.at("model.layers.1.mlp.down_proj.weight");
  down[0] = 1e5f, down[7] = -7e4f, down[9] = 65519.0f;  // the last rounds to 65504: no overflow
  io::SafeTensorsWriter out;
  const ParamLayout layout(m_, ModelShard::whole(m_));
  for (const ParamSpec& s : layout.specs()) out.add(s.name, w[s.name].data(), s.full_shape);
  out.write(file("model.safetensors"));
  const std::string e = test::error_of([&] { export_as(io::GgmlType::F16, "o.gguf"); });
  EXPECT_NE(e.find("2 value(s) beyond fp16's range"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.1.mlp.down_proj.weight (2)"), std::string::npos) << e;
  EXPECT_NE(e.find("--allow-overflow"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(file("o.gguf")));
  EXPECT_FALSE(std::filesystem::exists(file("o.gguf.tmp")));
  EXPECT_EQ(test::error_of([&] { export_as(io::GgmlType::F32, "f.gguf"); }), "");  // fp32 holds it

  io::GgufModelInfo info;
  info.name = "tiny-test";
  info.tokenizer_path = file("tokenizer.model");
  ::testing::internal::CaptureStderr();
  io::write_llama_gguf(m_, io::SafeTensorsReader(file("model.safetensors")), info, file("o.gguf"),
                       io::GgmlType::F16, true);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("clamped to ±65504"), std::string::npos);
  const std::vector<float> got = values(read_gguf(file("o.gguf")), "blk.1.ffn_down.weight");
  EXPECT_EQ(got[0], 65504.0f);
  EXPECT_EQ(got[7], -65504.0f);
  EXPECT_EQ(got[9], 65504.0f);
  for (size_t i = 10; i < down.size(); ++i) ASSERT_EQ(got[i], f16_to_float(float_to_f16(down[i])));
}

TEST_F(GgufExport, TiedHeadAndLlama3RopeFreqs) {
  m_.tie_embeddings = true;
  m_.rope_scaling.type = kernels::RopeType::llama3;
  m_.rope_scaling.factor = 4.0f, m_.rope_scaling.low_freq_factor = 1.0f;
  m_.rope_scaling.high_freq_factor = 4.0f, m_.rope_scaling.original_max_len = 64;
  write_weights();
  const GgufFile g = export_as(io::GgmlType::F16, "t.gguf");
  EXPECT_EQ(g.u("general.file_type"), 1u);
  EXPECT_EQ(g.tensors.count("output.weight"), 0u);
  EXPECT_EQ(g.tensors.at("token_embd.weight").type, 1u);
  ASSERT_EQ(g.tensors.count("rope_freqs.weight"), 1u);
  const std::vector<float> f = values(g, "rope_freqs.weight");
  ASSERT_EQ(f.size(), 8u);
  std::vector<float> plain(8), scaled(8);
  kernels::rope_inv_freq(plain.data(), 16, 10000.0f);
  kernels::rope_inv_freq(scaled.data(), 16, 10000.0f, m_.rope_scaling);
  bool kept = false, divided = false;
  for (int i = 0; i < 8; ++i) {  // llama.cpp's frequency: the plain one divided by the factor
    EXPECT_NEAR(plain[i] / f[i], scaled[i], 1e-6 * scaled[i]) << i;
    kept |= f[i] == 1.0f;
    divided |= std::abs(f[i] - 4.0f) < 1e-6f;
  }
  EXPECT_TRUE(kept && divided);
}

TEST(Gguf, RefusesWhatItCannotWrite) {
  EXPECT_NE(test::error_of([] { io::parse_gguf_dtype("q4_0"); }).find("f32, f16 or q8_0"),
            std::string::npos);
  const std::string path = (fs::temp_directory_path() /
                            ("parallama_gguf_refuse_" + std::to_string(::getpid()) + ".gguf"))
                               .string();
  io::GgufWriter w(path);
  EXPECT_NE(test::error_of([&] {
              w.add_tensor("x", {3, 40}, io::GgmlType::Q8_0);
            }).find("not a whole number of Q8_0 blocks"),
            std::string::npos);
  w.add_tensor("a", {4}, io::GgmlType::F32);
  w.add_tensor("b", {4}, io::GgmlType::F32);
  const float v[4] = {1, 2, 3, 4};
  EXPECT_NE(test::error_of([&] { w.write("b", v, 4); }).find("out of order"), std::string::npos);
  w.write("a", v, 4);
  EXPECT_NE(test::error_of([&] { w.commit(); }).find("incomplete"), std::string::npos);
  EXPECT_FALSE(fs::exists(path));
}

}  // namespace
}  // namespace parallama
