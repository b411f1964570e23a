#pragma once
// What a command reads and where it writes, checked before any work.
//
// Inputs: every file a command reads is a regular file (not a FIFO, a device or a directory,
// which would hang or mislead a reader) of at most a documented size (kMax* below; the limits
// are far above any real file of that kind, and far below what would exhaust memory).
//
// Outputs: a file or directory a command writes is refused, in one line, when it is one of the
// command's inputs or lies inside one (after resolving links and ".."), when an existing file
// would be overwritten without --force, or when it cannot be written (a missing or read-only
// directory, a directory where a file is meant). A directory output keeps the files that are
// not the command's own; its parent directories are made as needed.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace parallama {

// Upper bounds of the files that are read whole (bytes).
inline constexpr int64_t kMaxConfigBytes = int64_t{16} << 20;    // TOML and JSON settings
inline constexpr int64_t kMaxTokenizerBytes = int64_t{1} << 30;  // a tokenizer model
inline constexpr int64_t kMaxTextBytes = int64_t{64} << 30;      // a corpus, prompts, texts
inline constexpr int64_t kMaxMetricsBytes = int64_t{16} << 30;   // metrics.jsonl, traces

// `path` with links and ".." resolved as far as it exists (the rest appended).
std::filesystem::path resolved(const std::string& path);

// Throws Error unless `path` is a regular file of at most max_bytes; `what` names it in the
// message ("--text", "config").
void check_input_file(const std::string& path, const std::string& what, int64_t max_bytes);
// check_input_file, then the file opened for reading (binary).
std::ifstream open_input(const std::string& path, const std::string& what, int64_t max_bytes);

// An output file (option `what`): refused when it is one of `inputs` (files or directories the
// command reads) or lies inside one, is a directory, exists (unless force), or its directory is
// missing, not a directory or not writable.
void check_output_file(const std::string& what, const std::string& path,
                       const std::vector<std::string>& inputs, bool force);
// An output directory into which the command writes the entries `names` (files or
// subdirectories; others are kept): refused when it is a file, lies inside one of `inputs`, one
// of its `names` is an input or holds one, or it cannot be made or written.
void check_output_dir(const std::string& what, const std::string& dir,
                      const std::vector<std::string>& names,
                      const std::vector<std::string>& inputs);

// A tokenizer's files, `main` first: a tokenizer.model alone (sentencepiece), or a tokenizer.json
// (a path ending in .json: a byte-level BPE) and the tokenizer_config.json beside it, when there is
// one. A tokenizer's hash covers all of them, in this order.
std::vector<std::string> tokenizer_files(const std::string& main);
bool is_tokenizer_json(const std::string& main);
// The names a data set or checkpoint directory may hold a tokenizer under.
inline constexpr const char* kTokenizerNames[] = {"tokenizer.model", "tokenizer.json",
                                                  "tokenizer_config.json"};
// The tokenizer of directory `dir` (a data set, a checkpoint): its tokenizer.model, else its
// tokenizer.json. Throws Error naming dir (as `what`) when it has neither.
std::string tokenizer_in(const std::string& dir, const std::string& what);
// Copies the tokenizer `main` (and its config) into directory `dir` as tokenizer.model, or as
// tokenizer.json and tokenizer_config.json.
void copy_tokenizer(const std::string& main, const std::string& dir);

}  // namespace parallama
