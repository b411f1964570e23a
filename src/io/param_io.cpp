#include "io/param_io.h"

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

void check_group(const ParamLayout& layout, const comm::Group& tp) {
  const ModelShard& s = layout.shard();
  if (tp.size() != s.tp_size || tp.rank() != s.tp_rank)
    throw Error("the tensor-parallel group (rank " + std::to_string(tp.rank()) + " of " +
                std::to_string(tp.size()) + ") does not match this model shard (tensor-parallel " +
                "rank " + std::to_string(s.tp_rank) + " of " + std::to_string(s.tp_size) + ")");
}

// A parameter-shaped buffer stored under a name prefix.
struct Part {
  std::string prefix;
  const ParamBuffer* buffer;
};

std::vector<TensorDecl> decls_of(const std::vector<Part>& parts) {
  std::vector<TensorDecl> d;
  for (const Part& p : parts)
    for (const ParamSpec& s : p.buffer->layout().specs())
      d.push_back({p.prefix + s.name, s.full_shape, DType::F32});
  return d;
}

// Appends every tensor of `part` to out (the writer; nullptr elsewhere), whole: a split tensor is
// gathered from the group into `whole` and appended in the row-major order of the whole tensor.
// A failed append is kept in `error`, and the gathers go on so that the group stays in step.
// Ranks may hold slices of different extents (the vocabulary splits unevenly).
void write_part(SafeTensorsStreamWriter* out, const Part& part, comm::Group& tp,
                std::vector<float>& whole, std::exception_ptr& error) {
  const int P = tp.size();
  auto emit = [&](const std::string& name, const float* data, int64_t n) {
    if (out) guarded(error, [&] { out->append(name, data, n); });
  };
  // Every rank's element count of every tensor, in one exchange.
  const auto& specs = part.buffer->layout().specs();
  const int64_t n_specs = static_cast<int64_t>(specs.size());
  std::vector<int64_t> mine(n_specs), all(n_specs * P);
  for (int64_t i = 0; i < n_specs; ++i) mine[i] = specs[i].numel;
  if (P > 1)
    tp.all_gather(mine.data(), all.data(), std::vector<int64_t>(P, n_specs), comm::DataType::I64);
  int64_t index = 0;
  part.buffer->visit([&](const ParamSpec& s, const float* p) {
    const int64_t i = index++;
    const std::string name = part.prefix + s.name;
    if (s.split_axis < 0 || P == 1) return emit(name, p, s.numel);
    // whole: P blocks, block q rank q's slice along split_axis. The whole tensor, seen as
    // (outer, P, run_q) with outer the product of the dims before split_axis, takes row o of
    // every block in turn.
    std::vector<int64_t> counts(P), first(P, 0);
    for (int q = 0; q < P; ++q) counts[q] = all[q * n_specs + i];
    for (int q = 1; q < P; ++q) first[q] = first[q - 1] + counts[q - 1];
    whole.resize(static_cast<size_t>(first[P - 1] + counts[P - 1]));
    tp.all_gather(p, whole.data(), counts);
    int64_t outer = 1;
    for (int d = 0; d < s.split_axis; ++d) outer *= s.shape[d];
    for (int64_t o = 0; o < outer; ++o)
      for (int q = 0; q < P; ++q) {
        const int64_t run = counts[q] / outer;
        emit(name, whole.data() + first[q] + o * run, run);
      }
  });
}

void save_parts(const std::vector<Part>& parts, const std::map<std::string, std::string>& meta,
                const std::string& path, comm::Group& tp, bool writer) {
  std::exception_ptr error;
  std::unique_ptr<SafeTensorsStreamWriter> out;
  guarded(error, [&] {
    for (const Part& p : parts) check_group(p.buffer->layout(), tp);
    if (writer) out = std::make_unique<SafeTensorsStreamWriter>(path, decls_of(parts), meta);
  });
  agree_on_failure(tp, error);
  std::vector<float> whole;  // one whole tensor at a time
  for (const Part& p : parts) write_part(out.get(), p, tp, whole, error);
  if (out) guarded(error, [&] { out->commit(); });
  out.reset();  // removes the temporary file unless committed
  agree_on_failure(tp, error);
}

}  // namespace

void agree_on_failure(comm::Group& group, std::exception_ptr error) {
  if (group.size() == 1) {
    if (error) std::rethrow_exception(error);
    return;
  }
  const int64_t mine = error ? 1 : 0;
  std::vector<int64_t> failed(group.size());
  group.all_gather(&mine, failed.data(), std::vector<int64_t>(group.size(), 1),
                   comm::DataType::I64);
  int first = 0;
  while (first < group.size() && !failed[first]) ++first;
  if (first == group.size()) return;
  std::string msg = group.rank() == first ? message_of(error) : std::string();
  int64_t len = static_cast<int64_t>(msg.size());
  group.broadcast(&len, 1, first, comm::DataType::I64);
  msg.resize(static_cast<size_t>(len));
  if (len > 0) group.broadcast(msg.data(), len, first, comm::DataType::Byte);
  if (error) std::rethrow_exception(error);
  throw Error(msg);
}

void save_params(const ParamBuffer& params, const std::string& path, comm::Group& tp, bool writer) {
  save_parts({{"", &params}}, {}, path, tp, writer);
}

void save_params(const ParamBuffer& params, const std::string& path) {
  comm::Group one;
  save_params(params, path, one, true);
}

void read_params(const SafeTensorsReader& r, ParamBuffer& params, const std::string& prefix) {
  const ModelShard& shard = params.layout().shard();
  if (params.layout().config().tie_embeddings && r.has(prefix + "lm_head.weight"))
    throw Error(r.path() +
                ": holds lm_head.weight but this model ties the head to the embedding "
                "(set model.tie_embeddings = false to load it)");
  params.visit([&](const ParamSpec& s, float* p) {
    const std::string name = prefix + s.name;
    if (s.split_axis < 0 || shard.tp_size == 1) return r.read_f32(name, p, s.shape);
    r.read_f32_slice(name, p, s.full_shape, s.split_axis, s.split_offset, s.shape[s.split_axis]);
  });
}

void load_params(ParamBuffer& params, const std::string& path) {
  read_params(SafeTensorsReader(path), params);
}

void save_optimizer(const Optimizer& optim, const std::string& path, comm::Group& tp, bool writer) {
  std::vector<Part> parts;
  for (int i = 0; i < optim.num_states(); ++i)
    parts.push_back({std::string(optim.state_name(i)) + ".", &optim.state(i)});
  save_parts(parts,
             {{"optimizer", optim.config().name}, {"step", std::to_string(optim.steps_taken())}},
             path, tp, writer);
}

void load_optimizer(Optimizer& optim, const std::string& path) {
  const SafeTensorsReader r(path);
  const auto& meta = r.metadata();
  auto it = meta.find("optimizer");
  if (it == meta.end() || it->second != optim.config().name)
    throw Error(path + ": optimizer state is not for '" + optim.config().name + "'");
  for (int i = 0; i < optim.num_states(); ++i)
    read_params(r, optim.state(i), std::string(optim.state_name(i)) + ".");
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
  if (params.layout().shard().tp_size != 1)
    throw Error("a tensor-parallel slice is saved through its group (save_params with the group)");
  params.visit([&](const ParamSpec& s, const float* p) { w.add(prefix + s.name, p, s.shape); });
}

}  // namespace parallama::io
