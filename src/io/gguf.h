#pragma once
// GGUF (version 3), the model file of llama.cpp, written as a stream:
//   "GGUF", u32 version 3, u64 tensor count, u64 key-value count,
//   the key-value pairs (u64-length strings, typed values and arrays),
//   one info per tensor (name, u32 n_dims, u64 dims innermost first, u32 ggml type, u64 offset
//   of its data from the start of the data region, a multiple of general.alignment),
//   padding to the alignment, then the data region (each tensor padded to the alignment).
// All numbers are little-endian. Tensor types: F32, F16, and Q8_0 (blocks of 32 values: an fp16
// scale d = max|x| / 127, then 32 int8 round(x / d)).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/tensor_source.h"
#include "model/config.h"
#include "tensor/tensor.h"

namespace parallama::io {

enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q8_0 = 8 };

constexpr int64_t kQ8Block = 32;       // values per Q8_0 block
constexpr int64_t kQ8BlockBytes = 34;  // fp16 scale + 32 int8

// "f32" | "f16" | "q8_0" to a type; throws Error naming the choices.
GgmlType parse_gguf_dtype(const std::string& name);
const char* ggml_type_name(GgmlType t);  // f32 | f16 | q8_0
// Bytes of n values of type t (n a multiple of 32 for Q8_0).
uint64_t ggml_nbytes(GgmlType t, int64_t n);
// Q8_0 of n values (a multiple of 32) into n / 32 blocks of 34 bytes, and back.
void quantize_q8_0(const float* x, int64_t n, uint8_t* out);
void dequantize_q8_0(const uint8_t* blocks, int64_t n, float* y);

// Writes a GGUF file as a stream, holding no tensor. Every key-value pair and every tensor
// (row-major shape, type) is declared first; the first write() puts the header in place, then the
// tensors' values arrive in declaration order, each in one piece or several (for Q8_0, pieces of
// whole blocks of 32). Bytes go to `path + ".tmp"`; commit() checks that every tensor is
// complete, flushes the file to disk and renames it over `path`. Destroyed without commit(), the
// temporary file is removed. Errors throw parallama::Error naming the file.
class GgufWriter {
 public:
  explicit GgufWriter(const std::string& path, uint32_t alignment = 32);
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  void kv_u32(const std::string& key, uint32_t v);
  void kv_f32(const std::string& key, float v);
  void kv_bool(const std::string& key, bool v);
  void kv_str(const std::string& key, const std::string& v);
  void kv_strs(const std::string& key, const std::vector<std::string>& v);
  void kv_f32s(const std::string& key, const std::vector<float>& v);
  void kv_i32s(const std::string& key, const std::vector<int32_t>& v);

  // shape: row-major (outermost first), as safetensors gives it; stored innermost first.
  void add_tensor(const std::string& name, const Shape& shape, GgmlType type);
  // The next `count` values of tensor `name` (the first one not yet complete).
  void write(const std::string& name, const float* data, int64_t count);
  void commit();
  const std::string& path() const { return path_; }

 private:
  struct Tensor {
    std::string name;
    Shape shape;
    GgmlType type;
    int64_t numel;
    uint64_t offset;  // in the data region
  };
  void key(const std::string& k, uint32_t value_type);
  void write_header();
  void put(const void* p, size_t n);
  void pad_to(uint64_t multiple);

  std::string path_;
  uint32_t alignment_;
  struct File;
  std::unique_ptr<File> file_;
  std::string kvs_;  // the encoded key-value pairs
  uint64_t n_kv_ = 0;
  std::vector<std::string> keys_;
  std::vector<Tensor> tensors_;
  uint64_t data_bytes_ = 0;  // of the data region as declared so far
  bool header_done_ = false;
  size_t cur_ = 0;
  int64_t written_ = 0;  // values of tensors_[cur_] written
  std::vector<uint8_t> stage_;
};

// For a q or k projection of heads of head_dim rows each: the row of the Hugging Face
// (rotate-half) matrix that becomes row `row` of llama.cpp's (interleaved pairs) matrix. Within a
// head, HF's rows (2, head_dim/2) become (head_dim/2, 2): row 2i + j takes row j·head_dim/2 + i.
int64_t gguf_qk_source_row(int64_t row, int64_t head_dim);

// A byte-level BPE vocabulary as llama.cpp reads it (tokenizer.ggml.model "gpt2").
struct GgufBpeVocab {
  std::vector<std::string> tokens;  // by id, spelled in the byte-level alphabet
  std::vector<int32_t> types;       // by id: 1 normal, 3 control, 4 user-defined
  std::vector<std::string> merges;  // "left right", by rank
  std::string pre;                  // tokenizer.ggml.pre: "llama-bpe" (Llama 3), "gpt-2"
  int32_t bos = 0, eos = 0;
};

// What goes into a llama.cpp model file besides the weights.
struct GgufModelInfo {
  std::string name;            // general.name
  std::string tokenizer_path;  // the sentencepiece model (when there is no bpe)
  std::optional<GgufBpeVocab> bpe;
  bool add_bos = true;   // tokenizer.ggml.add_bos_token
  bool add_eos = false;  // tokenizer.ggml.add_eos_token
};

// Writes `out` (a GGUF file of architecture "llama") from the checkpoint weights in
// `weights` (Hugging Face Llama names, shapes as `model` gives), tensor by tensor in
// pieces of a few MiB: matrices as `type` (Q8_0 falls back to F16 for a tensor whose rows are
// not a whole number of blocks), norms always F32, q and k rows permuted per head to llama.cpp's
// rotary convention, output.weight left out when the embedding is tied, and for llama3
// rope_scaling a rope_freqs.weight of the frequency divisors. Throws Error before writing
// anything for a tensor of the wrong shape, a tokenizer with more pieces than the model has
// rows, or values an F16 tensor cannot hold (io::check_f16_range), unless allow_overflow: then
// those are clamped to ±65504.
void write_llama_gguf(const LlamaConfig& model, const TensorSource& weights,
                      const GgufModelInfo& info, const std::string& out, GgmlType type,
                      bool allow_overflow = false);

}  // namespace parallama::io
