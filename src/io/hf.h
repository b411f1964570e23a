#pragma once
// Hugging Face Llama directories (LlamaForCausalLM): config.json to and from LlamaConfig, the
// weights as model.safetensors or as shards named by model.safetensors.index.json. Tensor names
// and shapes are the checkpoints' own (model/params.h), so tensors move across unchanged; only
// their stored type may differ (F32, BF16 or F16 in, F32, BF16 or F16 out).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"

namespace parallama::io {

// What config.json says about a model.
struct HfConfig {
  LlamaConfig model;        // name "custom" (every [model] key given)
  std::string torch_dtype;  // "float32", "bfloat16", "float16", or "" when not given
};

// Reads a LlamaForCausalLM config.json (source names it in errors): hidden_size,
// num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size, vocab_size,
// rope_theta, rms_norm_eps, tie_word_embeddings, max_position_embeddings and rope_scaling (none,
// or type llama3). Throws Error with one line for another architecture, a missing or mistyped
// field, a rope_scaling of another type, biases, an activation other than silu, a head_dim
// other than hidden_size / num_attention_heads, or a shape LlamaConfig::validate refuses.
HfConfig parse_hf_config(const nlohmann::json& j, const std::string& source);
// config.json for model with its tensors stored as torch_dtype, written so that
// parse_hf_config reads back the same values (floats in their shortest decimal form).
// bos and eos: the tokenizer's ids (1 and 2 for a sentencepiece tokenizer of parallama's).
nlohmann::ordered_json hf_config_json(const LlamaConfig& model, const std::string& torch_dtype,
                                      int32_t bos, int32_t eos);
// generation_config.json: the tokenizer's bos and eos.
nlohmann::ordered_json hf_generation_config_json(int32_t bos, int32_t eos);

// "f32" | "bf16" | "f16" (or the torch names float32 | bfloat16 | float16) to DType; throws Error.
DType parse_hf_dtype(const std::string& name);
const char* torch_dtype_name(DType t);  // float32 | bfloat16 | float16

// The weights of a Hugging Face directory: model.safetensors, or every shard that
// model.safetensors.index.json names (each opened once). Throws Error with one line when
// neither exists, or the index is malformed or names a tensor its shard does not hold.
class HfWeights {
 public:
  explicit HfWeights(const std::string& dir);
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  // Throws Error naming the directory when there is no tensor `name`.
  const SafeTensorsReader& file_of(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafeTensorsReader>> files_;
  std::map<std::string, const SafeTensorsReader*> where_;
};

// One file of a sharded model: its name and its tensors, in order.
struct HfShard {
  std::string file;
  std::vector<TensorDecl> tensors;
  uint64_t bytes = 0;  // of tensor data
};
// Splits tensors (in order) into files of at most max_bytes of tensor data each (a larger tensor
// alone in its own file): one file model.safetensors when everything fits, otherwise
// model-00001-of-0000N.safetensors, ... (the Hugging Face names).
std::vector<HfShard> plan_hf_shards(const std::vector<TensorDecl>& tensors, uint64_t max_bytes);
// model.safetensors.index.json of a plan of more than one file: metadata.total_size and
// weight_map (tensor name -> file).
nlohmann::ordered_json hf_index_json(const std::vector<HfShard>& shards);

// Reads tensor `name` of r (stored shape `shape`, any dtype) as fp32 in pieces of about
// `piece_floats` elements (whole rows; a vector at once) through buf: got(values, count), in
// order (got may change the values: they are buf's).
void read_f32_pieces(const TensorSource& r, const std::string& name, const Shape& shape,
                     std::vector<float>& buf, int64_t piece_floats,
                     const std::function<void(float*, int64_t)>& got);
// Copies tensor `name` of r to out as the next tensor `out_name`, as read_f32_pieces reads it;
// with clamp_f16, values beyond fp16's range become ±65504 first (tensor/f16.h).
void copy_tensor(const TensorSource& r, const std::string& name, const Shape& shape,
                 SafeTensorsStreamWriter& out, const std::string& out_name, std::vector<float>& buf,
                 int64_t piece_floats, bool clamp_f16 = false);

// fp16 output, checked before anything is written: counts the values of each tensor (name, its
// stored shape in r) that fp16 cannot hold (f16_overflows: they would become ±inf). Unless
// allow_overflow, any such value is Error with one line naming the tensors and their counts;
// with it, one warning line on stderr says how many will be clamped to ±65504.
void check_f16_range(const TensorSource& r,
                     const std::vector<std::pair<std::string, Shape>>& tensors,
                     bool allow_overflow);

// The shortest decimal text that reads back as f, as a double (1e-05f -> 1e-05, not
// 9.99999974737875e-06), so JSON and TOML show what a person wrote.
double shortest_double(float f);

}  // namespace parallama::io
