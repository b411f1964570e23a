#pragma once
// Checkpoints written by every rank (train.ckpt_per_rank): each rank writes the pieces it holds
// of every tensor (its tensor-parallel slice of its pipeline stage's tensors, its ZeRO shard of
// the optimizer state) to files of its own, model.rank-R.safetensors and
// optimizer.rank-R.safetensors, in parallel with the others, nothing gathered. pieces.json, the
// index, maps each whole tensor (Hugging Face names, as model.safetensors holds them) to its
// pieces: a box of the whole tensor (start and shape per dimension), the file and the name it
// has there. PieceSource reads whole tensors, or slices of them, back from the pieces, so any
// layout loads such a checkpoint and it converts to Hugging Face and GGUF like a whole one.
//
// pieces.json: {"format": 1, "ranks": W,
//               "model" | "optimizer": {"metadata": {...}, "tensors": {NAME: {"shape": [...],
//                  "pieces": [{"file": F, "key": K, "start": [...], "shape": [...]}, ...]}}}}
#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/tensor_source.h"
#include "model/params.h"
#include "optim/optimizer.h"

namespace parallama::io {

inline constexpr const char* kPieceIndex = "pieces.json";

// "model.rank-00003.safetensors" for kind "model" and rank 3.
std::string piece_file(const std::string& kind, int rank);

// Which tensors held by every replica alike (the parameters, an optimizer state that is not
// sharded) this rank writes: tensor i of its layout when i % size == rank; size 0: none (another
// replica writes them). A ZeRO shard is always written by its owner.
struct PieceShare {
  PieceShare(int r = 0, int n = 1) : rank(r), size(n) {}
  int rank, size;
};

// Writes this rank's pieces of params and optim into dir (files piece_file(kind, rank), only
// those with pieces), each flushed to disk, then the rank's part of the index, part_file(rank):
// {"rank": R, "checksums": {FILE: hex16}, "model": {NAME: {"shape", "pieces"}}, "optimizer": ...}.
// A last stage's tied copy of the embedding is not written (the first stage's table is).
void write_rank_pieces(const std::filesystem::path& dir, int rank, const ParamBuffer& params,
                       const Optimizer& optim, PieceShare share);
std::string part_file(int rank);  // "part.rank-00003.json"

// On the rank that completes the checkpoint, once every rank has written its pieces: reads the
// `ranks` parts from dir, writes pieces.json (merge_piece_index), removes the parts, and returns
// the checksum of every piece file. Throws Error naming a rank whose part is not there (every
// rank must write to a file system this rank sees).
std::map<std::string, std::string> make_piece_index(const std::filesystem::path& dir, int ranks,
                                                    const LlamaConfig& config,
                                                    const Optimizer& optim);

// pieces.json from every rank's part (write_rank_pieces'): throws Error unless the pieces of
// every tensor of the whole model and of every optimizer state add up to the tensor, each
// exactly once.
nlohmann::json merge_piece_index(const std::vector<nlohmann::json>& parts,
                                 const LlamaConfig& config, const Optimizer& optim);

// The tensors of one kind ("model" or "optimizer") of a checkpoint written by every rank.
// Reading the index checks it (every piece inside its tensor, the pieces' sizes adding up to the
// tensor's); each read copies from the pieces that overlap what was asked, opening each rank's
// file once, and checks that they covered all of it.
class PieceSource : public TensorSource {
 public:
  PieceSource(const std::string& dir, const std::string& kind);
  ~PieceSource() override;
  bool has(const std::string& name) const override { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const override;
  void read_f32(const std::string& name, float* dst, const Shape& expected_shape) const override;
  void read_f32_slice(const std::string& name, float* dst, const Shape& expected_shape, int axis,
                      int64_t begin, int64_t count) const override;
  const std::map<std::string, std::string>& metadata() const override { return meta_; }
  const std::string& path() const override { return path_; }

 private:
  struct Piece {
    std::string file, key;
    Shape start, shape;
  };
  struct Entry {
    TensorInfo info;
    std::vector<Piece> pieces;
  };
  const Entry& entry(const std::string& name, const Shape& expected) const;
  const SafeTensorsReader& file(const std::string& name) const;

  std::string dir_, path_;
  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> meta_;
  mutable std::map<std::string, std::unique_ptr<SafeTensorsReader>> files_;
};

// The model's ("model") or the optimizer's ("optimizer") tensors of checkpoint dir: its one
// file (model.safetensors, optimizer.safetensors), else the pieces pieces.json lists.
std::unique_ptr<TensorSource> open_checkpoint_tensors(const std::string& dir,
                                                      const std::string& kind);

// The files trainer.json checksums that hold the model's tensors (model.safetensors, or the
// pieces and pieces.json), and with `optimizer` the optimizer's too.
std::vector<std::string> checkpoint_tensor_files(const nlohmann::json& trainer, bool optimizer);

}  // namespace parallama::io
