#include "io/param_io.h"

#include <unistd.h>

#include <algorithm>
#include <map>
#include <vector>

#include "tensor/error.h"

namespace parallama::io {

namespace {

std::string message_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown error";
  }
}

// The error every rank of group throws (nullptr when no rank has one): a rank's own, else an
// Error with the message of the lowest failing rank.
std::exception_ptr agreed(comm::Group& group, std::exception_ptr error) {
  if (group.size() == 1) return error;
  const int64_t mine = error ? 1 : 0;
  std::vector<int64_t> failed(group.size());
  group.all_gather(&mine, failed.data(), std::vector<int64_t>(group.size(), 1), DType::I64);
  int first = 0;
  while (first < group.size() && !failed[first]) ++first;
  if (first == group.size()) return nullptr;
  std::string msg = group.rank() == first ? message_of(error) : std::string();
  int64_t len = static_cast<int64_t>(msg.size());
  group.broadcast(&len, 1, first, DType::I64);
  msg.resize(static_cast<size_t>(len));
  if (len > 0) group.broadcast(msg.data(), len, first, DType::U8);
  if (error) return error;
  return std::make_exception_ptr(Error(msg));
}

}  // namespace

void agree_on_failure(comm::Group& group, std::exception_ptr error) {
  if (auto e = agreed(group, std::move(error))) std::rethrow_exception(e);
}

// After the tensor-parallel round every rank of a stage agrees, so each pipeline group (one rank
// of every stage) sees the same failing stages, and every rank of the replica ends up agreeing.
void agree_on_failure(comm::Group& tp, comm::Group& pp, std::exception_ptr error) {
  if (auto e = agreed(pp, agreed(tp, std::move(error)))) std::rethrow_exception(e);
}

void agree_on_failure(comm::Group& tp, comm::Group& pp, comm::Group& dp, std::exception_ptr error) {
  if (auto e = agreed(dp, agreed(pp, agreed(tp, std::move(error))))) std::rethrow_exception(e);
}

WriterAt replica_writer(comm::Group& tp, comm::Group& pp, bool writer, const std::string& what,
                        comm::Group dp) {
  // Summed over the stage, then over the stages (and the replicas): every rank gets the same.
  int64_t v[4] = {writer ? 1 : 0, writer ? tp.rank() : 0, writer ? pp.rank() : 0,
                  writer ? static_cast<int64_t>(getpid()) : 0};
  tp.all_reduce(v, 4, DType::I64);
  pp.all_reduce(v, 4, DType::I64);
  dp.all_reduce(v, 4, DType::I64);
  if (v[0] != 1)
    throw Error(what +
                ": exactly one rank of the tensor-parallel and pipeline groups must write, not " +
                std::to_string(v[0]));
  return {static_cast<int>(v[1]), static_cast<int>(v[2]), v[3]};
}

namespace {

void refuse_untied_head(const TensorSource& r, const LlamaConfig& config,
                        const std::string& prefix) {
  if (config.tie_embeddings && r.has(prefix + "lm_head.weight"))
    throw Error(r.path() +
                ": holds lm_head.weight but this model ties the head to the embedding "
                "(set model.tie_embeddings = false to load it)");
}

// This shard's part of one tensor (its tensor-parallel slice), into p.
void read_tensor(const TensorSource& r, const ParamSpec& s, int tp_size, const std::string& prefix,
                 float* p) {
  const std::string name = prefix + s.name;
  if (s.split_axis < 0 || tp_size == 1) return r.read_f32(name, p, s.shape);
  r.read_f32_slice(name, p, s.full_shape, s.split_axis, s.split_offset, s.shape[s.split_axis]);
}

}  // namespace

void read_params(const TensorSource& r, ParamBuffer& params, const std::string& prefix) {
  refuse_untied_head(r, params.layout().config(), prefix);
  const int tp_size = params.layout().shard().tp_size;
  params.visit([&](const ParamSpec& s, float* p) { read_tensor(r, s, tp_size, prefix, p); });
}

void load_params(ParamBuffer& params, const std::string& path) {
  read_params(SafeTensorsReader(path), params);
}

void load_optimizer(Optimizer& optim, const std::string& path) {
  load_optimizer(optim, SafeTensorsReader(path));
}

void load_optimizer(Optimizer& optim, const TensorSource& r) {
  const std::string& path = r.path();
  const auto& meta = r.metadata();
  auto it = meta.find("optimizer");
  const std::string kind = optim_kind_name(optim.config().name);
  if (it == meta.end() || it->second != kind)
    throw Error(path + ": optimizer state is not for '" + kind + "'");
  const ParamLayout& layout = optim.layout();
  refuse_untied_head(r, layout.config(), std::string(optim.state_name(0)) + ".");
  std::vector<float> tensor;  // ZeRO: one tensor's slice at a time, of which the owned piece
  for (int i = 0; i < optim.num_states(); ++i) {
    const std::string prefix = std::string(optim.state_name(i)) + ".";
    for (const OwnedRun& run : optim.owned())
      for (const ParamSpec& s : layout.specs()) {
        const int64_t a = std::max(run.begin, s.offset), b = std::min(run.end, s.offset + s.numel);
        if (a >= b) continue;
        float* dst = optim.state(i) + run.at + (a - run.begin);
        if (a == s.offset && b == s.offset + s.numel) {
          read_tensor(r, s, layout.shard().tp_size, prefix, dst);
          continue;
        }
        tensor.resize(static_cast<size_t>(s.numel));
        read_tensor(r, s, layout.shard().tp_size, prefix, tensor.data());
        std::copy(tensor.begin() + (a - s.offset), tensor.begin() + (b - s.offset), dst);
      }
  }
  it = meta.find("step");
  if (it == meta.end()) throw Error(path + ": optimizer state has no step count");
  int64_t step = 0;
  try {
    step = std::stoll(it->second);
  } catch (const std::exception&) {
    throw Error(path + ": optimizer step count '" + it->second + "' is not a number");
  }
  optim.set_steps_taken(step);
}

void add_params(SafeTensorsWriter& w, const ParamBuffer& params, const std::string& prefix) {
  if (!params.layout().shard().is_whole(params.layout().config()))
    throw Error(
        "a tensor-parallel slice or a pipeline stage is saved through its groups (save_params "
        "with the tensor-parallel and pipeline groups)");
  params.visit([&](const ParamSpec& s, const float* p) { w.add(prefix + s.name, p, s.shape); });
}

}  // namespace parallama::io
