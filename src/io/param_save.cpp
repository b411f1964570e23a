// Saving parameter-shaped buffers of one replica (tensor-parallel slices of pipeline stages) as
// one file of whole tensors; see param_io.h. The steps, on every rank of the replica:
//   1. agree on the one writer and check the groups against the layout;
//   2. each stage's tensor-parallel group exchanges the extents of its slices, so every rank of
//      the stage knows how each of its tensors gathers into a whole one; the stage's rank in the
//      writer's tensor-parallel position (its voice) sends that list to the writer over the
//      pipeline group, and the writer, with every stage's list, declares the file's tensors;
//   3. stage after stage, the stage gathers its tensors one at a time and its voice sends each
//      whole tensor to the writer (or, on the writer's own stage, the writer appends it).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "io/param_io.h"
#include "tensor/error.h"

namespace parallama::io {

namespace {

constexpr int kListTag = 29101;                     // a stage's tensor list: length, then text
constexpr int kTensorTag = 29102;                   // whole tensors, in pieces
constexpr int64_t kPieceFloats = int64_t{1} << 26;  // 256 MiB: below one message's 2 GiB limit

int64_t g_gather_peak = 0;  // bytes of the gather buffers held at once, since the last take
void note_held(const std::vector<float>& a, const std::vector<float>& b, size_t extra = 0) {
  const auto held = static_cast<int64_t>((a.capacity() + b.capacity() + extra) * sizeof(float));
  g_gather_peak = std::max(g_gather_peak, held);
}

void check_group(const ParamLayout& layout, const comm::Group& tp) {
  const ModelShard& s = layout.shard();
  if (tp.size() != s.tp_size || tp.rank() != s.tp_rank)
    throw Error("the tensor-parallel group (rank " + std::to_string(tp.rank()) + " of " +
                std::to_string(tp.size()) + ") does not match this model shard (tensor-parallel " +
                "rank " + std::to_string(s.tp_rank) + " of " + std::to_string(s.tp_size) + ")");
}

// A parameter-shaped buffer stored under a name prefix: laid out as the layout, or (ZeRO) as
// this rank's owned runs of it, the rest held by the other data-parallel ranks.
struct Part {
  std::string prefix;
  const ParamLayout* layout;
  const float* data;
  const std::vector<OwnedRun>* runs = nullptr;  // null: data holds the whole layout
  int from_dp = -1;  // ≥ 0: data-parallel rank from_dp's buffer, sent to every replica

  // This rank's tensor-parallel slice of tensor s: in place, or gathered over dp into scratch
  // (collective over dp: every replica calls it for the same tensors in the same order).
  const float* slice(const ParamSpec& s, comm::Group& dp, std::vector<float>& scratch) const {
    if (from_dp >= 0 && dp.size() > 1) {
      scratch.assign(data + s.offset, data + s.offset + s.numel);
      note_held(scratch, {});
      dp.broadcast(scratch.data(), s.numel, from_dp);
      return scratch.data();
    }
    if (!runs) return data + s.offset;
    int64_t mine[2] = {s.offset, 0};  // where this rank's piece starts, and its length
    for (const OwnedRun& r : *runs) {
      const int64_t a = std::max(r.begin, s.offset), b = std::min(r.end, s.offset + s.numel);
      if (a >= b) continue;
      if (mine[1] > 0) throw Error(s.name + ": more than one owned piece of the tensor");
      mine[0] = a, mine[1] = b - a;
      scratch.assign(data + r.at + (a - r.begin), data + r.at + (b - r.begin));
    }
    if (mine[1] == 0) scratch.clear();
    const int D = dp.size();
    std::vector<int64_t> all(2 * D), counts(D);
    dp.all_gather(mine, all.data(), std::vector<int64_t>(D, 2), DType::I64);
    int64_t at = s.offset;
    for (int d = 0; d < D; ++d) {
      if (all[2 * d + 1] > 0 && all[2 * d] != at)
        throw Error(s.name + ": the data-parallel ranks' pieces are not in rank order");
      counts[d] = all[2 * d + 1], at += counts[d];
    }
    if (at != s.offset + s.numel)
      throw Error(s.name + ": the data-parallel ranks hold " + std::to_string(at - s.offset) +
                  " of its " + std::to_string(s.numel) + " elements");
    std::vector<float> whole(static_cast<size_t>(s.numel));
    note_held(scratch, whole);
    dp.all_gather(scratch.data(), whole.data(), counts);
    scratch.swap(whole);
    return scratch.data();
  }
};

// One whole tensor as its stage's tensor-parallel group gathers it: counts[q] elements from tp
// rank q, rank after rank (one entry: not split, the voice's own copy). Seen as (outer, q, run_q)
// with run_q = counts[q] / outer, the whole tensor takes row o of every rank's block in turn:
// outer is 1 for a split by rows and the number of rows for a split by columns.
struct Gathered {
  std::string name;  // with the part's prefix
  Shape shape;       // of the whole tensor
  int64_t outer = 1;
  std::vector<int64_t> counts;
  const ParamSpec* spec = nullptr;  // on its own stage only

  int64_t numel() const {
    int64_t n = 0;
    for (int64_t c : counts) n += c;
    return n;
  }
  // Appends the whole tensor, row-major, from buf (laid out as gathered).
  void append_to(SafeTensorsStreamWriter& out, const float* buf) const {
    const int P = static_cast<int>(counts.size());
    std::vector<int64_t> first(P, 0);
    for (int q = 1; q < P; ++q) first[q] = first[q - 1] + counts[q - 1];
    for (int64_t o = 0; o < outer; ++o)
      for (int q = 0; q < P; ++q) {
        const int64_t run = counts[q] / outer;
        out.append(name, buf + first[q] + o * run, run);
      }
  }
};

using Lists = std::vector<std::vector<Gathered>>;  // [part][tensor], in file order

// This stage's tensors of every part, collective over tp: the extents of every rank's slices in
// one exchange per part. Tied copies are left out (the first stage's table is stored).
Lists stage_lists(const std::vector<Part>& parts, comm::Group& tp) {
  const int P = tp.size();
  Lists lists;
  for (const Part& part : parts) {
    const auto& specs = part.layout->specs();
    const int64_t n = static_cast<int64_t>(specs.size());
    std::vector<int64_t> mine(n), all(n * P);
    for (int64_t i = 0; i < n; ++i) mine[i] = specs[i].numel;
    if (P > 1) tp.all_gather(mine.data(), all.data(), std::vector<int64_t>(P, n), DType::I64);
    auto& list = lists.emplace_back();
    for (int64_t i = 0; i < n; ++i) {
      const ParamSpec& s = specs[i];
      if (s.tied_copy) continue;
      Gathered g{part.prefix + s.name, s.full_shape, 1, {s.numel}, &s};
      if (s.split_axis >= 0 && P > 1) {
        g.counts.resize(P);
        for (int q = 0; q < P; ++q) g.counts[q] = all[q * n + i];
        for (int d = 0; d < s.split_axis; ++d) g.outer *= s.shape[d];
      }
      list.push_back(std::move(g));
    }
  }
  return lists;
}

void send_lists(comm::Group& pp, int to, const Lists& lists) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& list : lists) {
    nlohmann::json& l = j.emplace_back(nlohmann::json::array());
    for (const Gathered& g : list)
      l.push_back({{"name", g.name}, {"shape", g.shape}, {"outer", g.outer}, {"counts", g.counts}});
  }
  const std::string text = j.dump();
  const int64_t len = static_cast<int64_t>(text.size());
  pp.send(&len, sizeof len, to, kListTag);
  pp.send(text.data(), len, to, kListTag);
}

std::string receive_text(comm::Group& pp, int from) {
  int64_t len = 0;
  pp.recv(&len, sizeof len, from, kListTag);
  std::string text(static_cast<size_t>(len), '\0');
  pp.recv(text.data(), len, from, kListTag);
  return text;
}

Lists parse_lists(const std::string& text) {
  Lists lists;
  for (const auto& l : nlohmann::json::parse(text)) {
    auto& list = lists.emplace_back();
    for (const auto& g : l)
      list.push_back({g.at("name").get<std::string>(), g.at("shape").get<Shape>(),
                      g.at("outer").get<int64_t>(), g.at("counts").get<std::vector<int64_t>>()});
  }
  return lists;
}

// On the writer: the stages together hold every tensor of the whole model once, with its shape.
void check_whole_model(const std::vector<Part>& parts, const std::vector<Lists>& stages,
                       const std::string& path) {
  if (parts.empty()) return;
  const LlamaConfig& config = parts.front().layout->config();
  const ParamLayout whole(config, ModelShard::whole(config));
  for (size_t i = 0; i < parts.size(); ++i) {
    std::map<std::string, Shape> want;
    for (const ParamSpec& s : whole.specs()) want[parts[i].prefix + s.name] = s.full_shape;
    std::map<std::string, int> held;  // name -> stage
    for (size_t st = 0; st < stages.size(); ++st) {
      if (stages[st].size() != parts.size())
        throw Error("saving " + path + ": pipeline stage " + std::to_string(st) + " sent " +
                    std::to_string(stages[st].size()) + " kinds of tensors, not " +
                    std::to_string(parts.size()));
      for (const Gathered& g : stages[st][i]) {
        const std::string where = "saving " + path + ": pipeline stage " + std::to_string(st);
        auto it = want.find(g.name);
        if (it == want.end())
          throw Error(where + " holds " + g.name + ", which is not a tensor of the model");
        if (it->second != g.shape)
          throw Error(where + " holds " + g.name + " of shape " + shape_str(g.shape) +
                      " but the model's is " + shape_str(it->second));
        if (g.numel() != numel(g.shape))
          throw Error(where + ": the tensor-parallel slices of " + g.name + " hold " +
                      std::to_string(g.numel()) + " elements, not " +
                      std::to_string(numel(g.shape)));
        if (auto [h, fresh] = held.emplace(g.name, static_cast<int>(st)); !fresh)
          throw Error("saving " + path + ": " + g.name + " is held by pipeline stages " +
                      std::to_string(h->second) + " and " + std::to_string(st) +
                      " (the stages' layer ranges overlap)");
      }
    }
    for (const ParamSpec& s : whole.specs())  // the first tensor missing, in the model's order
      if (!held.count(parts[i].prefix + s.name))
        throw Error("saving " + path + ": no pipeline stage holds " + parts[i].prefix + s.name +
                    " (the " + std::to_string(stages.size()) + " stage(s) hold " +
                    std::to_string(held.size()) + " of the model's " + std::to_string(want.size()) +
                    " tensors: is the pipeline group complete?)");
  }
}

std::vector<TensorDecl> decls_of(const std::vector<Lists>& stages, size_t n_parts) {
  std::vector<TensorDecl> d;
  for (size_t i = 0; i < n_parts; ++i)
    for (const Lists& stage : stages)
      for (const Gathered& g : stage[i]) d.push_back({g.name, g.shape, DType::F32});
  return d;
}

void send_floats(comm::Group& pp, int to, const float* data, int64_t n) {
  for (int64_t at = 0; at < n; at += kPieceFloats)
    pp.send(data + at, 4 * std::min(kPieceFloats, n - at), to, kTensorTag);
}

void receive_floats(comm::Group& pp, int from, float* data, int64_t n) {
  for (int64_t at = 0; at < n; at += kPieceFloats)
    pp.recv(data + at, 4 * std::min(kPieceFloats, n - at), from, kTensorTag);
}

// Every replica (dp) runs the same steps: the collector of each (the rank at the writer's
// coordinates) receives its replica's tensors, and only the writer's writes them.
void save_parts(const std::vector<Part>& parts, const std::map<std::string, std::string>& meta,
                const std::string& path, comm::Group& tp, comm::Group& pp, comm::Group& dp,
                bool writer) {
  const WriterAt w = replica_writer(tp, pp, writer, "saving " + path, dp);
  std::exception_ptr error;
  guarded(error, [&] {
    for (const Part& p : parts) check_group(*p.layout, tp);
  });
  agree_on_failure(tp, pp, dp, error);

  const Lists mine = stage_lists(parts, tp);
  const bool voice = tp.rank() == w.tp;  // speaks for its stage to the collector
  const bool collector = voice && pp.rank() == w.pp;
  std::vector<Lists> stages;  // the collector's: every stage's list, in stage order
  if (collector) {
    std::vector<std::string> texts(pp.size());
    for (int s = 0; s < pp.size(); ++s)
      if (s != pp.rank()) texts[s] = receive_text(pp, s);
    guarded(error, [&] {
      for (int s = 0; s < pp.size(); ++s)
        stages.push_back(s == pp.rank() ? mine : parse_lists(texts[s]));
    });
  } else if (voice) {
    send_lists(pp, w.pp, mine);
  }
  std::unique_ptr<SafeTensorsStreamWriter> out;
  if (collector)
    guarded(error, [&] {
      check_whole_model(parts, stages, path);
      if (writer)
        out = std::make_unique<SafeTensorsStreamWriter>(path, decls_of(stages, parts.size()), meta);
    });
  agree_on_failure(tp, pp, dp, error);

  // One whole tensor at a time. A failed append is kept in `error`; the transfers go on so that
  // every rank stays in step.
  std::vector<float> whole, slice;
  auto append = [&](const Gathered& g, const float* data) {
    if (out) guarded(error, [&] { g.append_to(*out, data); });
  };
  for (size_t i = 0; i < parts.size(); ++i)
    for (int s = 0; s < pp.size(); ++s) {
      if (s == pp.rank()) {  // this stage gathers and sends (or writes) its tensors
        for (const Gathered& g : mine[i]) {
          const float* data = parts[i].slice(*g.spec, dp, slice);
          if (g.counts.size() > 1) {
            whole.assign(static_cast<size_t>(g.numel()), 0.0f);
            note_held(slice, whole);
            tp.all_gather(data, whole.data(), g.counts);
            data = whole.data();
          }
          if (collector)
            append(g, data);
          else if (voice)
            send_floats(pp, w.pp, data, g.numel());
          // Nothing held beyond one tensor: the buffers go once it has gone.
          std::vector<float>().swap(whole), std::vector<float>().swap(slice);
        }
      } else if (collector) {  // another stage's tensors arrive
        for (const Gathered& g : stages[s][i]) {
          whole.assign(static_cast<size_t>(g.numel()), 0.0f);
          note_held(slice, whole);
          receive_floats(pp, s, whole.data(), g.numel());
          append(g, whole.data());
          std::vector<float>().swap(whole);
        }
      }
    }
  if (out) guarded(error, [&] { out->commit(); });
  out.reset();  // removes the temporary file unless committed
  agree_on_failure(tp, pp, dp, error);
}

}  // namespace

int64_t take_gather_peak_bytes() {
  const int64_t p = g_gather_peak;
  g_gather_peak = 0;
  return p;
}

void save_params(const ParamBuffer& params, const std::string& path, comm::Group& tp,
                 comm::Group& pp, bool writer, comm::Group dp) {
  save_parts({{"", &params.layout(), params.data()}}, {}, path, tp, pp, dp, writer);
}

void save_params(const ParamBuffer& params, const std::string& path) {
  comm::Group one;
  save_params(params, path, one, one, true);
}

void save_optimizer(const Optimizer& optim, const std::string& path, comm::Group& tp,
                    comm::Group& pp, bool writer, comm::Group dp) {
  std::vector<Part> parts;
  for (int i = 0; i < optim.num_states(); ++i)
    parts.push_back({std::string(optim.state_name(i)) + ".", &optim.layout(), optim.state(i),
                     optim.owns_all() ? nullptr : &optim.owned()});
  save_parts(parts,
             {{"optimizer", optim_kind_name(optim.config().name)},
              {"step", std::to_string(optim.steps_taken())}},
             path, tp, pp, dp, writer);
}

void save_rank_buffers(const ParamLayout& layout, const std::vector<RankBuffer>& buffers,
                       const std::string& path, comm::Group& tp, comm::Group& pp, bool writer,
                       comm::Group& dp) {
  std::vector<Part> parts;
  for (const RankBuffer& b : buffers)
    parts.push_back({b.prefix, &layout, b.data, nullptr, b.from_dp});
  save_parts(parts, {{"dp", std::to_string(dp.size())}}, path, tp, pp, dp, writer);
}

void save_residuals(const ParamLayout& layout, const float* residual, const std::string& path,
                    comm::Group& tp, comm::Group& pp, bool writer, comm::Group& dp) {
  std::vector<RankBuffer> buffers;
  for (int d = 0; d < dp.size(); ++d)
    buffers.push_back({"residual." + std::to_string(d) + ".", residual, d});
  save_rank_buffers(layout, buffers, path, tp, pp, writer, dp);
}

}  // namespace parallama::io
