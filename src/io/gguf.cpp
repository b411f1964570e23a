#include "io/gguf.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "io/hf.h"
#include "io/paths.h"
#include "io/safetensors.h"
#include "kernels/rope.h"
#include "tensor/error.h"
#include "tensor/f16.h"

namespace fs = std::filesystem;

namespace parallama::io {

namespace {

// GGUF value types.
enum : uint32_t {
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
};

constexpr int64_t kPieceFloats = int64_t{1} << 20;  // about 4 MiB of fp32 per read

template <typename T>
void append_pod(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void append_str(std::string& s, const std::string& v) {
  append_pod<uint64_t>(s, v.size());
  s += v;
}

}  // namespace

GgmlType parse_gguf_dtype(const std::string& name) {
  if (name == "f32") return GgmlType::F32;
  if (name == "f16") return GgmlType::F16;
  if (name == "q8_0") return GgmlType::Q8_0;
  throw Error("--dtype " + name + " is not a GGUF tensor type this writer knows: f32, f16 or q8_0");
}

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
      return "f32";
    case GgmlType::F16:
      return "f16";
    case GgmlType::Q8_0:
      return "q8_0";
  }
  return "?";
}

uint64_t ggml_nbytes(GgmlType t, int64_t n) {
  switch (t) {
    case GgmlType::F32:
      return static_cast<uint64_t>(n) * 4;
    case GgmlType::F16:
      return static_cast<uint64_t>(n) * 2;
    case GgmlType::Q8_0:
      return static_cast<uint64_t>(n / kQ8Block) * kQ8BlockBytes;
  }
  return 0;
}

void quantize_q8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQ8Block; ++b, x += kQ8Block, out += kQ8BlockBytes) {
    float amax = 0.0f;
    for (int64_t i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const uint16_t dh = float_to_f16(d);
    std::memcpy(out, &dh, 2);
    for (int64_t i = 0; i < kQ8Block; ++i) {
      const float q = d > 0.0f ? std::round(x[i] / d) : 0.0f;
      out[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f)));
    }
  }
}

void dequantize_q8_0(const uint8_t* blocks, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kQ8Block; ++b, blocks += kQ8BlockBytes, y += kQ8Block) {
    uint16_t dh;
    std::memcpy(&dh, blocks, 2);
    const float d = f16_to_float(dh);
    for (int64_t i = 0; i < kQ8Block; ++i)
      y[i] = d * static_cast<float>(static_cast<int8_t>(blocks[2 + i]));
  }
}

// --- GgufWriter ----------------------------------------------------------------------------

struct GgufWriter::File {
  std::FILE* f = nullptr;
  std::string tmp;
  ~File() {
    if (f) std::fclose(f);
  }
};

GgufWriter::GgufWriter(const std::string& path, uint32_t alignment)
    : path_(path), alignment_(alignment), file_(std::make_unique<File>()) {
  if (alignment == 0 || (alignment & (alignment - 1)))
    throw Error(path + ": GGUF alignment must be a power of two");
  kv_u32("general.alignment", alignment);
}

GgufWriter::~GgufWriter() {
  if (file_->f) {
    std::fclose(file_->f);
    file_->f = nullptr;
    std::remove(file_->tmp.c_str());
  }
}

void GgufWriter::key(const std::string& k, uint32_t value_type) {
  if (header_done_) throw Error(path_ + ": metadata " + k + " after the tensor data began");
  if (std::find(keys_.begin(), keys_.end(), k) != keys_.end())
    throw Error(path_ + ": metadata key " + k + " given twice");
  keys_.push_back(k);
  append_str(kvs_, k);
  append_pod<uint32_t>(kvs_, value_type);
  ++n_kv_;
}

void GgufWriter::kv_u32(const std::string& k, uint32_t v) {
  key(k, kU32);
  append_pod(kvs_, v);
}
void GgufWriter::kv_f32(const std::string& k, float v) {
  key(k, kF32);
  append_pod(kvs_, v);
}
void GgufWriter::kv_bool(const std::string& k, bool v) {
  key(k, kBool);
  append_pod<uint8_t>(kvs_, v ? 1 : 0);
}
void GgufWriter::kv_str(const std::string& k, const std::string& v) {
  key(k, kString);
  append_str(kvs_, v);
}
void GgufWriter::kv_strs(const std::string& k, const std::vector<std::string>& v) {
  key(k, kArray);
  append_pod<uint32_t>(kvs_, kString);
  append_pod<uint64_t>(kvs_, v.size());
  for (const std::string& s : v) append_str(kvs_, s);
}
void GgufWriter::kv_f32s(const std::string& k, const std::vector<float>& v) {
  key(k, kArray);
  append_pod<uint32_t>(kvs_, kF32);
  append_pod<uint64_t>(kvs_, v.size());
  for (float x : v) append_pod(kvs_, x);
}
void GgufWriter::kv_i32s(const std::string& k, const std::vector<int32_t>& v) {
  key(k, kArray);
  append_pod<uint32_t>(kvs_, kI32);
  append_pod<uint64_t>(kvs_, v.size());
  for (int32_t x : v) append_pod(kvs_, x);
}

void GgufWriter::add_tensor(const std::string& name, const Shape& shape, GgmlType type) {
  if (header_done_) throw Error(path_ + ": tensor " + name + " declared after the data began");
  if (name.empty() || name.size() >= 64)
    throw Error(path_ + ": tensor name '" + name + "' is empty or longer than 63 bytes");
  if (shape.empty() || shape.size() > 4)
    throw Error(path_ + ": tensor " + name + " must have 1 to 4 dimensions");
  for (const Tensor& t : tensors_)
    if (t.name == name) throw Error(path_ + ": tensor " + name + " declared twice");
  for (int64_t d : shape)
    if (d <= 0) throw Error(path_ + ": tensor " + name + " has shape " + shape_str(shape));
  if (type == GgmlType::Q8_0 && shape.back() % kQ8Block)
    throw Error(path_ + ": tensor " + name + " has rows of " + std::to_string(shape.back()) +
                " values, not a whole number of Q8_0 blocks of 32");
  const int64_t n = numel(shape);
  data_bytes_ = (data_bytes_ + alignment_ - 1) / alignment_ * alignment_;
  tensors_.push_back({name, shape, type, n, data_bytes_});
  data_bytes_ += ggml_nbytes(type, n);
}

void GgufWriter::put(const void* p, size_t n) {
  if (n && std::fwrite(p, 1, n, file_->f) != n)
    throw Error("cannot write " + file_->tmp + ": " + std::strerror(errno));
}

void GgufWriter::pad_to(uint64_t multiple) {
  const long at = std::ftell(file_->f);
  if (at < 0) throw Error("cannot write " + file_->tmp + ": " + std::strerror(errno));
  const uint64_t pos = static_cast<uint64_t>(at);
  static const char zeros[256] = {};
  for (uint64_t left = (multiple - pos % multiple) % multiple; left > 0;) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(left, sizeof zeros));
    put(zeros, k);
    left -= k;
  }
}

void GgufWriter::write_header() {
  file_->tmp = path_ + ".tmp";
  file_->f = std::fopen(file_->tmp.c_str(), "wb");
  if (!file_->f) throw Error("cannot create " + file_->tmp + ": " + std::strerror(errno));
  header_done_ = true;
  std::string h = "GGUF";
  append_pod<uint32_t>(h, 3);
  append_pod<uint64_t>(h, tensors_.size());
  append_pod<uint64_t>(h, n_kv_);
  h += kvs_;
  for (const Tensor& t : tensors_) {
    append_str(h, t.name);
    append_pod<uint32_t>(h, static_cast<uint32_t>(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d)
      append_pod<uint64_t>(h, static_cast<uint64_t>(*d));  // innermost first
    append_pod<uint32_t>(h, static_cast<uint32_t>(t.type));
    append_pod<uint64_t>(h, t.offset);
  }
  put(h.data(), h.size());
  pad_to(alignment_);
}

void GgufWriter::write(const std::string& name, const float* data, int64_t count) {
  if (!header_done_) write_header();
  while (cur_ < tensors_.size() && written_ == tensors_[cur_].numel) {
    ++cur_;
    written_ = 0;
  }
  if (cur_ == tensors_.size() || tensors_[cur_].name != name)
    throw Error(path_ + ": tensor " + name + " written out of order (expected " +
                (cur_ < tensors_.size() ? tensors_[cur_].name : std::string("none")) + ")");
  Tensor& t = tensors_[cur_];
  if (count < 0 || written_ + count > t.numel)
    throw Error(path_ + ": more values than tensor " + name + " holds");
  if (t.type == GgmlType::Q8_0 && count % kQ8Block)
    throw Error(path_ + ": tensor " + name + " (Q8_0) written in pieces of whole blocks of 32");
  if (written_ == 0) pad_to(alignment_);
  stage_.resize(ggml_nbytes(t.type, count));
  switch (t.type) {
    case GgmlType::F32:
      std::memcpy(stage_.data(), data, static_cast<size_t>(count) * 4);
      break;
    case GgmlType::F16:
      for (int64_t i = 0; i < count; ++i) {
        const uint16_t h = float_to_f16(data[i]);
        std::memcpy(stage_.data() + 2 * i, &h, 2);
      }
      break;
    case GgmlType::Q8_0:
      quantize_q8_0(data, count, stage_.data());
      break;
  }
  put(stage_.data(), stage_.size());
  written_ += count;
}

void GgufWriter::commit() {
  if (!header_done_) write_header();
  for (size_t i = cur_; i < tensors_.size(); ++i) {
    const int64_t have = i == cur_ ? written_ : 0;
    if (have != tensors_[i].numel)
      throw Error(path_ + ": tensor " + tensors_[i].name + " is incomplete (" +
                  std::to_string(have) + " of " + std::to_string(tensors_[i].numel) + " values)");
  }
  pad_to(alignment_);
  if (std::fflush(file_->f) != 0 || ::fsync(fileno(file_->f)) != 0)
    throw Error("cannot write " + file_->tmp + ": " + std::strerror(errno));
  std::fclose(file_->f);
  file_->f = nullptr;
  std::error_code ec;
  fs::rename(file_->tmp, path_, ec);
  if (ec) {
    std::remove(file_->tmp.c_str());
    throw Error("cannot rename " + file_->tmp + " to " + path_ + ": " + ec.message());
  }
}

// --- the llama model -----------------------------------------------------------------------

int64_t gguf_qk_source_row(int64_t row, int64_t head_dim) {
  const int64_t half = head_dim / 2, head = row / head_dim, r = row % head_dim;
  return head * head_dim + (r % 2) * half + r / 2;
}

namespace {

// The parts of a sentencepiece ModelProto that GGUF needs, read from its protobuf encoding:
// every piece (text, score, type) and the normalizer's add_dummy_prefix.
struct SpmModel {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;  // sentencepiece's Type: 1 normal, 2 unknown, 3 control,
                               // 4 user-defined, 5 unused, 6 byte (GGUF's token_type codes too)
  bool add_dummy_prefix = true;
};

class ProtoReader {
 public:
  ProtoReader(const std::string& bytes, size_t begin, size_t end, const std::string& source)
      : b_(bytes), at_(begin), end_(end), source_(source) {}
  bool done() const { return at_ >= end_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ >= end_) bad();
      const uint8_t c = static_cast<uint8_t>(b_[at_++]);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    bad();
  }
  // The next field: its number and wire type; `begin`, `end` span a length-delimited value.
  void next(uint32_t& field, uint32_t& wire, size_t& begin, size_t& end, uint64_t& value) {
    const uint64_t k = varint();
    field = static_cast<uint32_t>(k >> 3);
    wire = static_cast<uint32_t>(k & 7);
    begin = end = at_;
    value = 0;
    switch (wire) {
      case 0:
        value = varint();
        break;
      case 1:
        skip(8);
        break;
      case 5:
        if (end_ - at_ < 4) bad();
        std::memcpy(&value, b_.data() + at_, 4);
        at_ += 4;
        break;
      case 2: {
        const uint64_t n = varint();
        if (n > end_ - at_) bad();
        begin = at_;
        end = at_ + n;
        at_ = end;
        break;
      }
      default:
        bad();
    }
  }

  // Calls f(field, wire, begin, end, value) for every field up to the end.
  template <class F>
  void each(F&& f) {
    uint32_t field, wire;
    size_t begin, end;
    uint64_t value;
    while (!done()) {
      next(field, wire, begin, end, value);
      f(field, wire, begin, end, value);
    }
  }

 private:
  void skip(size_t n) {
    if (end_ - at_ < n) bad();
    at_ += n;
  }
  [[noreturn]] void bad() const {
    throw Error(source_ + ": not a sentencepiece model (malformed protobuf)");
  }
  const std::string& b_;
  size_t at_, end_;
  const std::string& source_;
};

SpmModel read_spm_model(const std::string& path) {
  std::ifstream in = open_input(path, "tokenizer", kMaxTokenizerBytes);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  SpmModel m;
  ProtoReader top(bytes, 0, bytes.size(), path);
  top.each([&](uint32_t field, uint32_t wire, size_t b, size_t e, uint64_t) {
    if (field == 1 && wire == 2) {  // ModelProto.pieces
      std::string text;
      float score = 0.0f;
      int32_t type = 1;
      ProtoReader(bytes, b, e, path)
          .each([&](uint32_t f2, uint32_t w2, size_t b2, size_t e2, uint64_t v2) {
            if (f2 == 1 && w2 == 2) text = bytes.substr(b2, e2 - b2);
            if (f2 == 2 && w2 == 5) {
              const auto bits = static_cast<uint32_t>(v2);
              std::memcpy(&score, &bits, 4);
            }
            if (f2 == 3 && w2 == 0) type = static_cast<int32_t>(v2);
          });
      m.pieces.push_back(std::move(text));
      m.scores.push_back(score);
      m.types.push_back(type);
    } else if (field == 3 && wire == 2) {  // ModelProto.normalizer_spec
      ProtoReader(bytes, b, e, path)
          .each([&](uint32_t f2, uint32_t w2, size_t, size_t, uint64_t v2) {
            if (f2 == 3 && w2 == 0) m.add_dummy_prefix = v2 != 0;
          });
    }
  });
  if (m.pieces.empty()) throw Error(path + ": a sentencepiece model without pieces");
  return m;
}

struct Out {
  std::string hf, gguf;
  Shape shape;
  GgmlType type;
  bool permute_heads = false;  // q or k: rows permuted per head
};

}  // namespace

void write_llama_gguf(const LlamaConfig& m, const TensorSource& r, const GgufModelInfo& info,
                      const std::string& out, GgmlType type, bool allow_overflow) {
  const int64_t C = m.dim, F = m.ffn_dim, V = m.vocab_size, D = m.head_dim();
  const int64_t QD = m.q_dim(), KD = m.kv_dim();
  SpmModel spm;
  if (info.bpe) {
    spm.pieces = info.bpe->tokens;
    spm.types = info.bpe->types;
  } else {
    spm = read_spm_model(info.tokenizer_path);
  }
  if (static_cast<int64_t>(spm.pieces.size()) > V)
    throw Error(info.tokenizer_path + " has " + std::to_string(spm.pieces.size()) +
                " tokens, more than the model's vocab_size " + std::to_string(V));
  for (int64_t i = static_cast<int64_t>(spm.pieces.size()); i < V; ++i) {  // rows past the pieces
    spm.pieces.push_back(info.bpe ? "[PAD" + std::to_string(i) + "]"
                                  : "<unused_" + std::to_string(i) + ">");
    if (!info.bpe) spm.scores.push_back(0.0f);
    spm.types.push_back(5);
  }

  // Matrices as asked, except Q8_0 where a row is not whole blocks; 1-D tensors always F32.
  auto matrix = [&](int64_t row_len) {
    return type == GgmlType::Q8_0 && row_len % kQ8Block ? GgmlType::F16 : type;
  };
  std::vector<Out> plan;
  plan.push_back({"model.embed_tokens.weight", "token_embd.weight", {V, C}, matrix(C), false});
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string g = "blk." + std::to_string(l) + ".";
    plan.push_back({p + "input_layernorm.weight", g + "attn_norm.weight", {C}, GgmlType::F32});
    plan.push_back({p + "self_attn.q_proj.weight", g + "attn_q.weight", {QD, C}, matrix(C), true});
    plan.push_back({p + "self_attn.k_proj.weight", g + "attn_k.weight", {KD, C}, matrix(C), true});
    plan.push_back({p + "self_attn.v_proj.weight", g + "attn_v.weight", {KD, C}, matrix(C)});
    plan.push_back({p + "self_attn.o_proj.weight", g + "attn_output.weight", {C, QD}, matrix(QD)});
    plan.push_back(
        {p + "post_attention_layernorm.weight", g + "ffn_norm.weight", {C}, GgmlType::F32});
    plan.push_back({p + "mlp.gate_proj.weight", g + "ffn_gate.weight", {F, C}, matrix(C)});
    plan.push_back({p + "mlp.up_proj.weight", g + "ffn_up.weight", {F, C}, matrix(C)});
    plan.push_back({p + "mlp.down_proj.weight", g + "ffn_down.weight", {C, F}, matrix(F)});
  }
  plan.push_back({"model.norm.weight", "output_norm.weight", {C}, GgmlType::F32});
  if (!m.tie_embeddings) plan.push_back({"lm_head.weight", "output.weight", {V, C}, matrix(C)});
  for (const Out& o : plan)
    if (r.info(o.hf).shape != o.shape)
      throw Error(r.path() + ": tensor " + o.hf + " has shape " + shape_str(r.info(o.hf).shape) +
                  " but the model's config gives " + shape_str(o.shape));

  // llama3 rope_scaling: llama.cpp divides each plain frequency theta^(-2i/D) by rope_freqs[i].
  std::vector<float> rope_freqs;
  if (m.rope_scaling.type == kernels::RopeType::llama3) {
    std::vector<float> plain(D / 2);
    rope_freqs.resize(D / 2);
    kernels::rope_inv_freq(plain.data(), D, m.rope_theta);
    kernels::rope_inv_freq(rope_freqs.data(), D, m.rope_theta, m.rope_scaling);
    for (int64_t i = 0; i < D / 2; ++i) rope_freqs[i] = plain[i] / rope_freqs[i];
  }
  std::vector<std::pair<std::string, Shape>> halves;  // fp16 tensors: every value must fit
  for (const Out& o : plan)
    if (o.type == GgmlType::F16) halves.emplace_back(o.hf, o.shape);
  check_f16_range(r, halves, allow_overflow);

  GgufWriter w(out);
  w.kv_str("general.architecture", "llama");
  w.kv_str("general.name", info.name);
  // llama.cpp's file types: all F32 0, mostly F16 1, mostly Q8_0 7.
  w.kv_u32("general.file_type", type == GgmlType::F32 ? 0 : type == GgmlType::F16 ? 1 : 7);
  w.kv_u32("llama.context_length", static_cast<uint32_t>(m.max_seq_len));
  w.kv_u32("llama.embedding_length", static_cast<uint32_t>(C));
  w.kv_u32("llama.block_count", static_cast<uint32_t>(m.n_layers));
  w.kv_u32("llama.feed_forward_length", static_cast<uint32_t>(F));
  w.kv_u32("llama.rope.dimension_count", static_cast<uint32_t>(D));
  w.kv_u32("llama.attention.head_count", static_cast<uint32_t>(m.n_heads));
  w.kv_u32("llama.attention.head_count_kv", static_cast<uint32_t>(m.n_kv_heads));
  w.kv_f32("llama.attention.layer_norm_rms_epsilon", m.norm_eps);
  w.kv_f32("llama.rope.freq_base", m.rope_theta);
  w.kv_u32("llama.vocab_size", static_cast<uint32_t>(V));
  if (info.bpe) {  // llama.cpp's byte-level BPE, with the pre-tokenizer it knows by this name
    w.kv_str("tokenizer.ggml.model", "gpt2");
    w.kv_str("tokenizer.ggml.pre", info.bpe->pre);
    w.kv_strs("tokenizer.ggml.tokens", spm.pieces);
    w.kv_i32s("tokenizer.ggml.token_type", spm.types);
    w.kv_strs("tokenizer.ggml.merges", info.bpe->merges);
    w.kv_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(info.bpe->bos));
    w.kv_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(info.bpe->eos));
  } else {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_strs("tokenizer.ggml.tokens", spm.pieces);
    w.kv_f32s("tokenizer.ggml.scores", spm.scores);
    w.kv_i32s("tokenizer.ggml.token_type", spm.types);
    w.kv_u32("tokenizer.ggml.unknown_token_id", 0);  // the ids every parallama tokenizer has
    w.kv_u32("tokenizer.ggml.bos_token_id", 1);
    w.kv_u32("tokenizer.ggml.eos_token_id", 2);
    w.kv_bool("tokenizer.ggml.add_space_prefix", spm.add_dummy_prefix);
  }
  w.kv_bool("tokenizer.ggml.add_bos_token", info.add_bos);
  w.kv_bool("tokenizer.ggml.add_eos_token", info.add_eos);

  if (!rope_freqs.empty()) w.add_tensor("rope_freqs.weight", {D / 2}, GgmlType::F32);
  for (const Out& o : plan) w.add_tensor(o.gguf, o.shape, o.type);

  if (!rope_freqs.empty()) w.write("rope_freqs.weight", rope_freqs.data(), D / 2);
  std::vector<float> buf, perm;
  for (const Out& o : plan) {
    const int64_t rows = o.shape[0], cols = o.shape.size() > 1 ? o.shape[1] : 1;
    if (o.shape.size() == 1) {
      buf.resize(static_cast<size_t>(rows));
      r.read_f32(o.hf, buf.data(), o.shape);
      w.write(o.gguf, buf.data(), rows);
      continue;
    }
    // Whole heads for q and k (permuted within each), else as many rows as fit in a piece.
    const int64_t step = o.permute_heads ? D : std::max<int64_t>(1, kPieceFloats / cols);
    for (int64_t first = 0; first < rows; first += step) {
      const int64_t n = std::min(step, rows - first);
      buf.resize(static_cast<size_t>(n * cols));
      r.read_f32_slice(o.hf, buf.data(), o.shape, 0, first, n);
      if (o.permute_heads) {
        perm.resize(buf.size());
        for (int64_t row = 0; row < n; ++row)
          std::memcpy(perm.data() + row * cols, buf.data() + gguf_qk_source_row(row, D) * cols,
                      static_cast<size_t>(cols) * sizeof(float));
        buf.swap(perm);
      }
      if (o.type == GgmlType::F16) clamp_f16_overflow(buf.data(), n * cols);  // none unless allowed
      w.write(o.gguf, buf.data(), n * cols);
    }
  }
  w.commit();
}

}  // namespace parallama::io
