#pragma once
// Mesh: the one place that turns the processes of a job and (dp, tp, pp) into this rank's
// coordinates, every sub-group, and the ModelShard this rank owns.
//
// Rank order: tensor-parallel fastest, then data-parallel, then pipeline stage,
//   rank = (pp_rank · dp + dp_rank) · tp + tp_rank,
// so the tp ranks of one replica are adjacent (they exchange activations every layer and
// belong on one machine: mpirun fills a machine's slots with consecutive ranks), and the
// data-parallel peers of one stage are a stride tp apart.
#include <string>

#include "comm/group.h"
#include "model/config.h"
#include "model/shard.h"

namespace parallama {

struct MeshShape {
  int dp = 1, tp = 1, pp = 1;
  int size() const { return dp * tp * pp; }
};

struct MeshCoord {
  int dp = 0, tp = 0, pp = 0;
};

// Coordinates of `rank` in a mesh of `shape` (rank < shape.size()).
MeshCoord mesh_coord(const MeshShape& shape, int rank);
int mesh_rank(const MeshShape& shape, const MeshCoord& c);

// Layers [first, last) of pipeline stage `stage` of `stages`: an even split, the first stages
// taking one more layer when L does not divide.
std::pair<int, int> stage_layers(int n_layers, int stages, int stage);

// The ModelShard of a rank at `c`; throws Error naming the rule a shape breaks (e.g.
// n_kv_heads % tp != 0, more stages than layers).
ModelShard mesh_shard(const LlamaConfig& model, const MeshShape& shape, const MeshCoord& c);

// The grid as text, one line per rank: coordinates, layers, heads, FFN columns and vocabulary
// rows; used by `parallama info --dp --tp --pp` and printed at start-up.
std::string describe_mesh(const LlamaConfig& model, const MeshShape& shape);

class Mesh {
 public:
  // `world` holds exactly shape.size() processes, else an Error that names both numbers and the
  // mpirun -np that would fit.
  Mesh(comm::Group world, const MeshShape& shape, const LlamaConfig& model);

  const MeshShape& shape() const { return shape_; }
  const MeshCoord& coord() const { return coord_; }
  const ModelShard& shard() const { return shard_; }
  comm::Group world, dp, tp, pp;  // dp: same (tp, pp); tp: same (dp, pp); pp: same (dp, tp)

 private:
  MeshShape shape_;
  MeshCoord coord_;
  ModelShard shard_;
};

}  // namespace parallama
