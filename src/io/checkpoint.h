#pragma once
// Checkpoint directories: model.safetensors (whole tensors, HF Llama names),
// optimizer.safetensors, and trainer.json (step, data position, RNG state, config, layout and
// checksums of the tensor files). Or, written by every rank (io/pieces.h), each rank's pieces
// (model.rank-R.safetensors, optimizer.rank-R.safetensors) and pieces.json, their index, in
// place of the two files. A checkpoint is written into a temporary directory, flushed to disk and
// renamed into place, so a crash never leaves a half checkpoint that looks complete. Tensors are
// stored whole, or as pieces that say where in the whole tensor they go, so a checkpoint written
// by any layout loads into any other.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>

#include <string>

#include "comm/group.h"
#include "io/pieces.h"
#include "model/params.h"
#include "optim/optimizer.h"
#include "tensor/hash.h"

namespace parallama {

struct CheckpointState {
  int64_t step = 0;                     // optimizer steps completed
  int64_t data_position = 0;            // global sample index of the next batch
  nlohmann::json extra;                 // config, layout, RNG state, last losses: recorded as given
  std::vector<std::string> copy_files;  // copied in as they are (e.g. the tokenizer model)
  // More tensor files (compression's state): called on every saving rank after the optimizer's
  // file is written, with the temporary directory; returns the names of the files written there
  // (on the writer; checksummed in trainer.json like model.safetensors).
  std::function<std::vector<std::string>(const std::filesystem::path& tmp)> more_files;
  // Written by every rank (train.ckpt_per_rank): each rank of every replica that calls
  // save_checkpoint writes its own pieces; of the tensors the replicas hold alike, those `share`
  // names (io::PieceShare).
  bool per_rank = false;
  io::PieceShare share{};
};

// Writes dir (replacing an older checkpoint of the same name only once the new one is complete).
// Collective over one model replica, given as tp, the tensor-parallel group of params' shard,
// and pp, its pipeline group (this tensor-parallel rank in every stage, ordered by stage); a
// size-1 Group() for a layout without either. Every rank of the replica calls it: each stage
// gathers its split tensors whole one at a time and sends them to the one rank with writer = true
// (exactly one in the replica), which alone creates the directory, writes the files (every
// tensor of the whole model once, by name) and trainer.json and renames the directory into
// place. A failure on the writer is thrown on every rank of the replica.
// A ZeRO optimizer holds only pieces of the state: then every replica calls it together, dp being
// the data-parallel group (see io::save_optimizer), and a failure is thrown on every rank.
// Deferred (deferred not null): the writer streams the tensor files into a staging directory
// under stage_root (a memory file system, /dev/shm) and returns at once, with *deferred set to
// the rest, to run on any thread: the files copied next to dir and flushed to disk, the copied
// files, trainer.json, and the rename; it throws Error on a failure, leaving no directory behind
// (an older checkpoint of the same name stays). Other ranks return after their part as before.
void save_checkpoint(const std::string& dir, const ParamBuffer& params, const Optimizer& optim,
                     const CheckpointState& state, comm::Group& tp, comm::Group& pp, bool writer,
                     comm::Group dp = {}, std::function<void()>* deferred = nullptr,
                     const std::string& stage_root = {});

// Reads trainer.json, verifies both checksums (the files shared out over the ranks of the replica
// given by tp and pp, as for save_checkpoint), then loads this rank's tensors, and of each only
// its slice (every shape checked), reading only those bytes; no other communication. A last
// stage's tied copy of the embedding reads model.embed_tokens.weight. Throws Error, on every rank
// of the replica, naming the file that is missing, corrupt, truncated or for another model.
CheckpointState load_checkpoint(const std::string& dir, ParamBuffer& params, Optimizer& optim,
                                comm::Group& tp, comm::Group& pp);

// Only the model weights (checksum verified), for generation and evaluation.
void load_checkpoint_model(const std::string& dir, ParamBuffer& params, comm::Group& tp,
                           comm::Group& pp);

// Verifies the checksums of every tensor file of the checkpoint `dir` (every file trainer.json has
// a checksum of) against its trainer.json (read_trainer_json's). Throws Error naming a file that is
// missing, corrupt or truncated.
void verify_checkpoint_files(const std::string& dir, const nlohmann::json& trainer_json);
// The same for one file `name` of the directory.
void verify_checkpoint_file(const std::string& dir, const nlohmann::json& trainer_json,
                            const std::string& name);

// Just trainer.json, parsed and checked (for reading the config before building the model).
// A format-1 file (older, without a checksum of its own) is read with a warning on stderr, once
// per file and process.
nlohmann::json read_trainer_json(const std::string& dir);
// The same from its text (source names it in errors): its own checksum (format 2; format 1 only
// for a file holding nothing a format-1 writer did not write), and the type and range of every
// field a command reads (step, data_position, epoch, tokenizer_hash — required — the tensor
// files' checksums, and that config, layout, rng and loss_scale are objects). Throws Error with
// one line; never returns a value a later read could trip on.
nlohmann::json parse_trainer_json(const std::string& text, const std::string& source);
// Sets j's "checksum" to that of the rest of j: FNV-1a 64 of its compact text, as 16 hex digits
// (as save_checkpoint does before writing trainer.json; classifier.json is sealed the same way).
void seal_json(nlohmann::json& j);
// Throws Error with one line naming source unless j's "checksum" is that of the rest of j.
void check_json_seal(const nlohmann::json& j, const std::string& source);

// Writes text to path through a temporary file and a rename. Throws Error naming the path and the
// reason on any failure, and leaves no temporary file behind.
void write_file_atomically(const std::string& path, const std::string& text);
// Writes `bytes` to `file` (replacing it), checking the open, the write, the flush and the
// close: Error "cannot write NAME: <reason>", NAME being `name`, else `file`.
void write_file_checked(const std::string& file, const std::string& bytes,
                        const std::string& name = "");

// Throws Error unless the tokenizer at tokenizer_path is the one whose hash (FNV-1a 64 of the
// bytes of its files, tokenizer_files in io/paths.h, as Tokenizer::hash) `recorded_in` (a token
// shard, a checkpoint) records.
uint64_t tokenizer_hash(const std::string& main);  // of the files of tokenizer `main`
void check_tokenizer_hash(const std::string& tokenizer_path, uint64_t want,
                          const std::string& recorded_in);

// The tokenizer (tokenizer.model or tokenizer.json) of checkpoint directory ckpt, checked against
// the hash its trainer.json records (Error when it was swapped for another).
std::string checkpoint_tokenizer(const std::string& ckpt);

// Makes directory `dir` as a whole: fill(tmp) writes its files into a temporary sibling, which
// then replaces dir (an older dir of that name is removed). On failure nothing of the new one is
// left, and a filesystem failure is Error "cannot write DIR: reason".
void write_dir_atomically(const std::string& dir,
                          const std::function<void(const std::filesystem::path& tmp)>& fill);

// FNV-1a 64 of a file's bytes (read in pieces), and the same as 16 hex digits.
uint64_t file_hash(const std::string& path, uint64_t h = kFnv1a64Basis);  // continuing from h
std::string file_checksum(const std::string& path);

}  // namespace parallama
