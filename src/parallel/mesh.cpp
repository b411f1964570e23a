#include "parallel/mesh.h"

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

std::pair<int, int> stage_layers(int n_layers, int stages, int stage) {
  const int base = n_layers / stages, extra = n_layers % stages;
  const int first = stage * base + std::min(stage, extra);
  return {first, first + base + (stage < extra ? 1 : 0)};
}

ModelShard mesh_shard(const LlamaConfig& model, const MeshShape& shape, const MeshCoord& c) {
  if (shape.dp < 1 || shape.tp < 1 || shape.pp < 1)
    throw Error("--dp, --tp and --pp must each be at least 1");
  if (shape.pp > model.n_layers)
    throw Error("--pp " + std::to_string(shape.pp) + " asks for more pipeline stages than the " +
                std::to_string(model.n_layers) + " layers of the model");
  const auto [first, last] = stage_layers(model.n_layers, shape.pp, c.pp);
  ModelShard s{first, last, c.pp == 0, c.pp == shape.pp - 1, c.tp, shape.tp};
  s.validate(model);
  return s;
}

std::string describe_mesh(const LlamaConfig& m, const MeshShape& shape) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line,
                "mesh dp %d x tp %d x pp %d = %d processes (rank = (pp·%d + dp)·%d + tp: "
                "tensor-parallel ranks adjacent)\n",
                shape.dp, shape.tp, shape.pp, shape.size(), shape.dp, shape.tp);
  out += line;
  for (int r = 0; r < shape.size(); ++r) {
    const MeshCoord c = mesh_coord(shape, r);
    const ModelShard s = mesh_shard(m, shape, c);
    const int h = s.local_heads(m), kvh = s.local_kv_heads(m), f = s.local_ffn(m);
    const int v = s.local_vocab(m);
    std::snprintf(line, sizeof line,
                  "  rank %d: dp %d tp %d pp %d | layers [%d, %d)%s%s | heads [%d, %d) kv heads "
                  "[%d, %d) ffn [%d, %d) vocab [%d, %d)\n",
                  r, c.dp, c.tp, c.pp, s.first_layer, s.last_layer,
                  s.has_embedding ? " +embedding" : "", s.has_head ? " +head" : "", c.tp * h,
                  (c.tp + 1) * h, c.tp * kvh, (c.tp + 1) * kvh, c.tp * f, (c.tp + 1) * f,
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
  dp.set_name("data-parallel");
  tp.set_name("tensor-parallel");
  pp.set_name("pipeline");
}

}  // namespace parallama
