#pragma once
// LlamaConfig: the shape of a LLaMA-family model, with named presets.
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/rope.h"
#include "tensor/dtype.h"
#include "tensor/names.h"

namespace parallama {

// Activation recompute: none keeps every activation of every layer until its backward; attention
// drops each layer's attention output and log-sum-exp and recomputes them from q, k and v in
// backward; full keeps only each layer's input and recomputes the layer's forward (up to its MLP
// activation; the output is not needed) just before its backward. The recomputed values are the
// same bits, so gradients are identical; one layer's dropped activations live in shared scratch.
enum class Recompute { none, attention, full };
constexpr std::array<Named<Recompute>, 3> names(Recompute) {
  return {
      {{Recompute::none, "none"}, {Recompute::attention, "attention"}, {Recompute::full, "full"}}};
}
Recompute parse_recompute(const std::string& name);  // throws Error naming the choices
const char* recompute_name(Recompute r);

// Matrix-multiply precision. fp32: everything in fp32. bf16 and fp16: mixed precision. The GEMMs
// of the layers and of the head multiply 16-bit operands and accumulate in fp32 (DType::BF16 or
// F16): a 16-bit copy of their weights, made from the fp32 master weights by the first forward of
// micro-batch 0 (so after every optimizer step, before the step's first use); the activations
// that only ever feed GEMMs (both norms' outputs, the SwiGLU output, the final norm's output)
// kept in 16 bits only; the attention output and every output gradient rounded to 16 bits just
// before their GEMMs. The residual stream, q|k|v, attention's softmax statistics, the norms', the
// SwiGLU's and the loss's arithmetic, all parameter gradients and the optimizer stay fp32: their
// sums and small differences are where 8 (bf16) or 11 (fp16) bits of mantissa would lose the
// signal. fp16's range is ±65504: gradients need loss scaling (see train/loss_scale.h).
enum class Precision { fp32, bf16, fp16 };
constexpr std::array<Named<Precision>, 3> names(Precision) {
  return {{{Precision::fp32, "fp32"}, {Precision::bf16, "bf16"}, {Precision::fp16, "fp16"}}};
}
// The type of the 16-bit GEMM operands (F32 for fp32: no rounding).
constexpr DType operand_dtype(Precision p) {
  return p == Precision::fp32 ? DType::F32 : p == Precision::bf16 ? DType::BF16 : DType::F16;
}
Precision parse_precision(const std::string& name);  // throws Error naming the choices
const char* precision_name(Precision p);

struct LlamaConfig {
  std::string name = "custom";
  int dim = 0;          // C
  int n_layers = 0;     // L
  int n_heads = 0;      // H
  int n_kv_heads = 0;   // KVH (grouped-query attention when < H)
  int ffn_dim = 0;      // F
  int vocab_size = 0;   // V
  int max_seq_len = 0;  // longest T the model is built for
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  kernels::RopeScaling rope_scaling;  // rotary frequencies for long contexts (Llama 3.1)
  bool tie_embeddings = false;        // lm_head shares model.embed_tokens.weight
  bool shape_only = false;            // a published shape for sizing; not trained here

  int head_dim() const { return n_heads > 0 ? dim / n_heads : 0; }  // D
  int q_dim() const { return n_heads * head_dim(); }                // H*D
  int kv_dim() const { return n_kv_heads * head_dim(); }            // KVH*D
  int64_t num_params() const;
  // Parameters that take part in matrix multiplies (all projections and the output head).
  int64_t num_matmul_params() const;

  // Throws Error naming the first invalid field and what would fix it.
  void validate() const;
};

// Names accepted by llama_preset().
std::vector<std::string> preset_names();
// Throws Error listing the known presets when `name` is unknown. "custom" (not in
// preset_names()) is a blank shape whose every [model] key must be given, as a model converted
// from another format records it.
LlamaConfig llama_preset(const std::string& name);

}  // namespace parallama
