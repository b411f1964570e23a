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
#include <vector>

#include "comm/group.h"
#include "model/config.h"
#include "model/shard.h"
#include "parallel/config.h"

namespace parallama {

// Training cost per token of one transformer layer, of the embedding and of the head with its
// loss (forward and backward; tensor parallelism divides all alike).
struct StageCosts {
  double layer = 0, embedding = 0, head = 0;
};
// The estimate from FLOPs, whole model.
StageCosts stage_costs(const LlamaConfig& model, int seq_len);

struct MeshShape {
  int dp = 1, tp = 1, pp = 1;
  // Pipeline plan: layers of each virtual stage (pp · pp_virtual entries) by hand, or empty for
  // a split that balances estimated cost; pp_virtual model chunks per rank (interleaved
  // schedules); seq_len for the cost of attention (0: the model's max_seq_len).
  std::vector<int> pp_layers = {};
  int pp_virtual = 1;
  int seq_len = 0;
  // How a split without pp_layers weighs the stages: cost (the FLOP estimate), measure
  // (`measured`, seconds per token timed on this machine; the estimate until it is set) or
  // even (layers alone, as if the embedding and the head cost nothing).
  PpBalance pp_balance = PpBalance::cost;
  StageCosts measured;
  int size() const { return dp * tp * pp; }
};

struct MeshCoord {
  int dp = 0, tp = 0, pp = 0;
};

// Coordinates of `rank` in a mesh of `shape` (rank < shape.size()).
MeshCoord mesh_coord(const MeshShape& shape, int rank);
int mesh_rank(const MeshShape& shape, const MeshCoord& c);

// The number of layers of each of the shape.pp · shape.pp_virtual virtual stages: shape.pp_layers
// when given (checked: one entry per virtual stage, each ≥ 1, adding up to the model's layers),
// otherwise the contiguous split that minimises the most expensive stage, the first stage
// paying for the embedding and the last for the head and the loss. Throws Error for an
// impossible split (more stages than layers, a hand split that does not add up).
std::vector<int> pipeline_split(const LlamaConfig& model, const MeshShape& shape);

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
  comm::Group replica;            // every rank of this data-parallel replica (same dp): tp × pp
  // The first and the last pipeline stage of this (dp, tp) when the head is tied to the
  // embedding and they differ: they sum the two copies' gradients. Size 1 otherwise.
  comm::Group tied;

 private:
  MeshShape shape_;
  MeshCoord coord_;
  ModelShard shard_;
};

}  // namespace parallama
