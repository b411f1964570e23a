#pragma once
// Params: every named tensor of a ModelShard carved out of ONE flat fp32 buffer, with Hugging
// Face Llama names. The same layout describes gradients and optimizer moments, so gradient
// buckets, optimizer shards and checkpoint tensors are all offsets into a flat buffer.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/shard.h"
#include "tensor/arena.h"
#include "tensor/tensor.h"

namespace parallama {

enum class ParamKind { Embedding, Norm, Matrix, Bias };

struct ParamSpec {
  std::string name;  // HF name, e.g. model.layers.3.self_attn.q_proj.weight
  ParamKind kind;
  Shape shape;               // local shape on this shard
  Shape full_shape;          // shape in the whole model
  int split_axis = -1;       // tensor-parallel split: -1 replicated, 0 rows, 1 columns
  int64_t split_offset = 0;  // where this shard starts along split_axis in the whole tensor
  int64_t offset = 0;        // in floats, into the flat buffer
  int64_t numel = 0;
  float init_std = 0;  // 0: initialised to ones (norm weights); biases to zeros
  // The last pipeline stage's copy of a tied embedding (its head): kept equal to the first
  // stage's table, so norms count it once and checkpoints store the first stage's.
  bool tied_copy = false;
  bool weight_decay() const { return kind == ParamKind::Matrix; }
};

// A tensor beyond the model's own (a fine-tuning head), placed after them; such tensors are
// adjacent to each other in the order given, and replicated over tensor parallelism.
struct ExtraParam {
  std::string name;
  ParamKind kind;
  Shape shape;
  float init_std = 0;
};

class ParamLayout {
 public:
  ParamLayout(const LlamaConfig& config, const ModelShard& shard,
              const std::vector<ExtraParam>& extra = {});
  const std::vector<ParamSpec>& specs() const { return specs_; }
  int64_t total() const { return total_; }
  const ParamSpec& find(const std::string& name) const;  // throws Error if absent
  const LlamaConfig& config() const { return config_; }
  const ModelShard& shard() const { return shard_; }

 private:
  LlamaConfig config_;
  ModelShard shard_;
  std::vector<ParamSpec> specs_;
  int64_t total_ = 0;
};

// A flat fp32 buffer laid out by a ParamLayout: parameters, gradients or optimizer moments.
class ParamBuffer {
 public:
  explicit ParamBuffer(const ParamLayout& layout) : layout_(&layout), buf_(layout.total()) {}
  float* data() { return buf_.data(); }
  const float* data() const { return buf_.data(); }
  int64_t size() const { return layout_->total(); }
  const ParamLayout& layout() const { return *layout_; }
  float* at(const ParamSpec& s) { return buf_.data() + s.offset; }
  const float* at(const ParamSpec& s) const { return buf_.data() + s.offset; }
  float* at(const std::string& name) { return at(layout_->find(name)); }
  void zero() { buf_.zero(); }
  void release() { buf_.release(); }  // zero, its pages handed back (see Buffer::release)
  size_t resident_bytes() const { return buf_.resident_bytes(); }

  // The one visitor: init, save, load, optimizer and gradient reduction walk tensors this way.
  void visit(const std::function<void(const ParamSpec&, float*)>& fn);
  void visit(const std::function<void(const ParamSpec&, const float*)>& fn) const;

 private:
  const ParamLayout* layout_;
  Buffer buf_;
};

// Seeded deterministic initialisation; each element depends only on (seed, name, global index),
// so a tensor-parallel slice gets exactly the values of the same region of the whole tensor.
void init_params(ParamBuffer& params, uint64_t seed);

}  // namespace parallama
