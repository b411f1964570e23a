#include "parallel/mesh.h"

#include <algorithm>
#include <cstdio>

#include "tensor/error.h"

namespace parallama {

MeshCoord mesh_coord(const MeshShape& s, int rank) {
  MeshCoord c;
  c.tp = rank % s.tp;
  c.dp = (rank / s.tp) % s.dp;
  c.pp = rank / (s.tp * s.dp);
  return c;
}

int mesh_rank(const MeshShape& s, const MeshCoord& c) {
  return (c.pp * s.dp + c.dp) * s.tp + c.tp;
}

StageCosts stage_costs(const LlamaConfig& m, int seq_len) {
  const double C = m.dim, D = m.head_dim(), F = m.ffn_dim, V = m.vocab_size;
  const double T = seq_len > 0 ? seq_len : m.max_seq_len;
  const double qkv = (m.n_heads + 2.0 * m.n_kv_heads) * D;
  // Per token, forward: 2 FLOPs per weight of q|k|v, o, gate|up and down, and the attention
  // scores and their weighted sum (about 2·T·C each, halved by the causal mask); backward twice
  // that. The head: its matmul and the softmax over V.
  const double layer = 3.0 * (2.0 * C * (qkv + m.n_heads * D + 3.0 * F) + 2.0 * T * C);
  const double head = 3.0 * (2.0 * C * V) + 10.0 * V;
  return {layer, 3.0 * C, head};
}

namespace {

// The costs a split weighs (see MeshShape::pp_balance).
StageCosts split_costs(const LlamaConfig& m, const MeshShape& shape) {
  if (shape.pp_balance == PpBalance::even) return {1.0, 0.0, 0.0};
  if (shape.pp_balance == PpBalance::measure && shape.measured.layer > 0) return shape.measured;
  return stage_costs(m, shape.seq_len);
}

const char* split_name(const MeshShape& shape) {
  if (!shape.pp_layers.empty()) return "by hand";
  if (shape.pp_balance == PpBalance::even) return "even: layers alone";
  if (shape.pp_balance == PpBalance::measure && shape.measured.layer > 0)
    return "balanced by measured time";
  return "balanced by estimated cost";
}

}  // namespace

std::vector<int> pipeline_split(const LlamaConfig& m, const MeshShape& shape) {
  const int S = shape.pp * shape.pp_virtual, L = m.n_layers;
  auto s = [](int v) { return std::to_string(v); };
  if (shape.pp_virtual < 1) throw Error("parallel.pp_virtual must be at least 1");
  if (!shape.pp_layers.empty()) {
    if (static_cast<int>(shape.pp_layers.size()) != S)
      throw Error("parallel.pp_layers has " + s(static_cast<int>(shape.pp_layers.size())) +
                  " entries but the pipeline has " + s(S) + " stages (pp " + s(shape.pp) +
                  " × pp_virtual " + s(shape.pp_virtual) + "): give one layer count per stage");
    int sum = 0;
    for (int n : shape.pp_layers) {
      if (n < 1) throw Error("parallel.pp_layers: every stage needs at least one layer");
      sum += n;
    }
    if (sum != L)
      throw Error("parallel.pp_layers adds up to " + s(sum) + " layers but the model has " + s(L));
    return shape.pp_layers;
  }
  if (S > L)
    throw Error("--pp " + s(shape.pp) + (shape.pp_virtual > 1 ? " × " + s(shape.pp_virtual) : "") +
                " asks for " + s(S) + " pipeline stages but the model has " + s(L) +
                " layers: each stage needs at least one");
  const StageCosts c = split_costs(m, shape);
  // best[k][i]: the least possible cost of the most expensive of k stages over layers [0, i).
  auto cost = [&](int k, int j, int i) {  // stage k - 1 holds layers [j, i)
    return (i - j) * c.layer + (k == 1 ? c.embedding : 0.0) + (k == S ? c.head : 0.0);
  };
  const double inf = 1e300;
  std::vector<std::vector<double>> best(S + 1, std::vector<double>(L + 1, inf));
  std::vector<std::vector<int>> from(S + 1, std::vector<int>(L + 1, 0));
  best[0][0] = 0.0;
  // The last stage's first layer j: best[k - 1][j] does not fall as j grows and cost(k, j, i)
  // does not rise, so the best j lies where they cross, found by bisection (time S·L·log L; a
  // plain scan of every j was S·L², seconds at thousands of layers). Ties go to the smallest j.
  for (int k = 1; k <= S; ++k)
    for (int i = k; i <= L - (S - k); ++i) {
      const std::vector<double>& prev = best[k - 1];
      int lo = k - 1;  // the first j in [k - 1, i) with prev[j] >= cost (i: none)
      for (int n = i - lo; n > 0;) {
        const int half = n / 2, mid = lo + half;
        if (prev[mid] < cost(k, mid, i))
          lo = mid + 1, n -= half + 1;
        else
          n = half;
      }
      auto value = [&](int j) { return std::max(prev[j], cost(k, j, i)); };
      int j = lo < i ? lo : i - 1;
      if (lo > k - 1 && (lo == i || value(lo - 1) <= value(lo))) {
        j = lo - 1;  // before the crossing: the cost side, and earlier ties of it
        while (j > k - 1 && value(j - 1) == value(j)) --j;
      }
      best[k][i] = value(j), from[k][i] = j;
    }
  std::vector<int> layers(S);
  for (int k = S, i = L; k >= 1; --k) layers[k - 1] = i - from[k][i], i = from[k][i];
  return layers;
}

ModelShard mesh_shard(const LlamaConfig& model, const MeshShape& shape, const MeshCoord& c) {
  if (shape.dp < 1 || shape.tp < 1 || shape.pp < 1)
    throw Error("--dp, --tp and --pp must each be at least 1");
  const std::vector<int> layers = pipeline_split(model, shape);
  // Virtual stage k runs on rank k % pp as its chunk k / pp.
  std::vector<std::pair<int, int>> chunks;
  for (int k = 0, first = 0; k < static_cast<int>(layers.size()); first += layers[k++])
    if (k % shape.pp == c.pp) chunks.push_back({first, first + layers[k]});
  ModelShard s{chunks[0].first, chunks[0].second, c.pp == 0, c.pp == shape.pp - 1, c.tp, shape.tp};
  s.later_chunks.assign(chunks.begin() + 1, chunks.end());
  s.validate(model);
  return s;
}

std::string describe_mesh(const LlamaConfig& m, const MeshShape& shape) {
  std::string out;
  char line[320];
  std::snprintf(line, sizeof line,
                "mesh dp %d x tp %d x pp %d = %d processes (rank = (pp·%d + dp)·%d + tp: "
                "tensor-parallel ranks adjacent)\n",
                shape.dp, shape.tp, shape.pp, shape.size(), shape.dp, shape.tp);
  out += line;
  if (shape.pp > 1) {  // the pipeline plan: layers and estimated cost of every stage
    const std::vector<int> layers = pipeline_split(m, shape);
    const StageCosts c = shape.pp_balance == PpBalance::measure && shape.measured.layer > 0
                             ? shape.measured
                             : stage_costs(m, shape.seq_len);
    const int S = static_cast<int>(layers.size());
    double total = 0, most = 0;
    std::vector<double> cost(S);
    for (int k = 0; k < S; ++k) {
      cost[k] = layers[k] * c.layer + (k == 0 ? c.embedding : 0) + (k == S - 1 ? c.head : 0);
      total += cost[k], most = std::max(most, cost[k]);
    }
    out += std::string("pipeline plan (") + split_name(shape) + "; the head costs as much as " +
           std::to_string(c.head / c.layer).substr(0, 4) + " layers):";
    for (int k = 0, first = 0; k < S; first += layers[k++]) {
      std::snprintf(line, sizeof line, " %sstage %d: layers [%d, %d) %.0f%%%s",
                    shape.pp_virtual > 1 ? "virtual " : "", k, first, first + layers[k],
                    100.0 * cost[k] / total, k + 1 < S ? ";" : "\n");
      out += line;
    }
    std::snprintf(line, sizeof line,
                  "  (the slowest stage sets the pace: %.0f%% of a perfectly even split)\n",
                  100.0 * (total / S) / most);
    out += line;
  }
  for (int r = 0; r < shape.size(); ++r) {
    const MeshCoord c = mesh_coord(shape, r);
    const ModelShard s = mesh_shard(m, shape, c);
    const int h = s.local_heads(m), kvh = s.local_kv_heads(m), f = s.local_ffn(m);
    const int v = s.local_vocab(m);
    std::string layers;
    for (const auto& [a, b] : s.chunks())
      layers +=
          (layers.empty() ? "" : " ") + ("[" + std::to_string(a) + ", " + std::to_string(b) + ")");
    std::snprintf(line, sizeof line,
                  "  rank %d: dp %d tp %d pp %d | layers %s%s%s | heads [%d, %d) kv heads "
                  "[%d, %d) ffn [%d, %d) vocab [%d, %d)\n",
                  r, c.dp, c.tp, c.pp, layers.c_str(), s.has_embedding ? " +embedding" : "",
                  s.has_head ? (s.has_tied_copy(m) ? " +head (tied copy)" : " +head") : "",
                  c.tp * h, (c.tp + 1) * h, c.tp * kvh, (c.tp + 1) * kvh, c.tp * f, (c.tp + 1) * f,
                  s.vocab_begin(m), s.vocab_begin(m) + v);
    out += line;
  }
  return out;
}

Mesh::Mesh(comm::Group w, const MeshShape& shape, const LlamaConfig& model)
    : world(std::move(w)), shape_(shape) {
  if (shape.size() != world.size())
    throw Error("--dp " + std::to_string(shape.dp) + " × --tp " + std::to_string(shape.tp) +
                " × --pp " + std::to_string(shape.pp) + " = " + std::to_string(shape.size()) +
                " processes, but " + std::to_string(world.size()) +
                " started (launch with mpirun -np " + std::to_string(shape.size()) +
                " or change the layout)");
  coord_ = mesh_coord(shape, world.rank());
  shard_ = mesh_shard(model, shape, coord_);
  // Every split is collective over the world, in the same order on every rank.
  const MeshCoord& c = coord_;
  dp = world.split(c.pp * shape.tp + c.tp, c.dp);
  tp = world.split(c.pp * shape.dp + c.dp, c.tp);
  pp = world.split(c.dp * shape.tp + c.tp, c.pp);
  replica = world.split(c.dp, c.pp * shape.tp + c.tp);
  const bool tie = model.tie_embeddings && shape.pp > 1 && (c.pp == 0 || c.pp == shape.pp - 1);
  tied = world.split(tie ? c.dp * shape.tp + c.tp : shape.dp * shape.tp + world.rank(), c.pp);
  tied.set_name("tied-embedding");
  replica.set_name("replica");
  dp.set_name("data-parallel");
  tp.set_name("tensor-parallel");
  pp.set_name("pipeline");
}

}  // namespace parallama
