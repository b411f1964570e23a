#include "data/prepare.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data/shard.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "io/paths.h"
#include "tensor/error.h"
#include "tensor/hash.h"
#include "tensor/utf8.h"

namespace fs = std::filesystem;

namespace parallama {

namespace {

// The set `prepare` writes, and replaces as a whole: the shards, meta.json and the tokenizer's
// files (tokenizer.model, or tokenizer.json with tokenizer_config.json when it has one).
constexpr const char* kSetFiles[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                     "train.bin",       "val.bin",        "meta.json"};
// The files of the set in directory `dir`, the tokenizer's last.
std::vector<std::string> set_files_in(const fs::path& dir) {
  std::vector<std::string> files;
  for (const char* f : {"meta.json", "val.bin", "train.bin", "tokenizer_config.json",
                        "tokenizer.json", "tokenizer.model"})
    if (fs::exists(dir / f)) files.push_back(f);
  return files;
}

bool in_set(const std::string& name) {
  for (const char* f : kSetFiles)
    if (name == f) return true;
  return false;
}

[[noreturn]] void write_failed(const fs::path& path, int err) {
  throw Error("cannot write " + path.string() + ": " +
              (err ? std::strerror(err) : "the write failed"));
}

// Forces a file's (or a directory's entries') data to the disk.
void sync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) write_failed(path, errno);
  const int rc = ::fsync(fd), err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) write_failed(path, err);  // EINVAL: this file cannot be synced
}

// After the swap the new set is in place and its files are on the disk: making the rename itself
// durable is all that is left, and a failure there is no reason to report the set as not written.
void sync_path_quietly(const fs::path& path) {
  if (const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// "PATH: line L, byte offset B", where a text file holds a byte that is not text.
std::string where(const std::string& path, size_t line, size_t offset) {
  return path + ": line " + std::to_string(line) + ", byte offset " + std::to_string(offset);
}

void check_text_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw Error("--text '" + path +
                "' is a directory, not a text file (give each file: --text DIR/*.txt)");
  check_input_file(path, "text file", kMaxTextBytes);
}

// Reads one text file into `lines` (its non-blank lines, without line ends), refusing a
// directory and anything that is not UTF-8 text. Returns its entry for meta.json's "inputs".
nlohmann::json read_text(const std::string& path, std::vector<std::string>& lines,
                         std::vector<int64_t>* line_numbers = nullptr, bool allow_empty = false) {
  check_text_file(path);
  std::ifstream in = open_input(path, "text file", kMaxTextBytes);
  size_t count = 0, bytes = 0, line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line_no == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) {  // a byte-order mark is no text
      line.erase(0, 3);
      bytes += 3;
    }
    if (const size_t nul = line.find('\0'); nul != std::string::npos)
      throw Error(where(path, line_no, bytes + nul) +
                  " holds a NUL byte: a binary file, not UTF-8 text");
    if (const size_t bad = first_invalid_utf8(line); bad != std::string::npos) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(line[bad]));
      throw Error(where(path, line_no, bytes + bad) + " holds byte " + hex +
                  ", which is not valid UTF-8: a binary file, or text in another encoding "
                  "(convert it with iconv)");
    }
    bytes += line.size() + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    lines.push_back(std::move(line));
    if (line_numbers) line_numbers->push_back(static_cast<int64_t>(line_no));
    ++count;
  }
  if (in.bad()) throw Error("cannot read text file '" + path + "': " + std::strerror(errno));
  if (count == 0 && !allow_empty) throw Error("text file '" + path + "' is empty");
  return {{"file", fs::path(path).filename().string()}, {"bytes", bytes}, {"lines", count}};
}

// The bytes of the tokenizer's files (tokenizer_files, io/paths.h).
std::vector<std::string> read_tokenizer(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw Error("--tokenizer '" + path +
                "' is a directory, not a tokenizer (give its tokenizer.model or tokenizer.json)");
  std::vector<std::string> all;
  for (const std::string& f : tokenizer_files(path)) {
    std::ifstream in = open_input(f, "tokenizer", kMaxTokenizerBytes);
    all.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw Error("cannot read tokenizer '" + f + "': " + std::strerror(errno));
  }
  return all;
}

// --out as an absolute path without a trailing separator, "." or "..", through any symbolic link.
fs::path resolve_out(const std::string& out_dir) {
  fs::path p = fs::absolute(out_dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  std::error_code ec;
  if (fs::exists(p, ec))
    if (fs::path real = fs::canonical(p, ec); !ec) p = real;
  if (!p.has_filename() || p == p.root_path())
    throw Error("--out '" + out_dir + "' cannot be replaced: give a directory below it");
  if (fs::exists(p, ec) && !fs::is_directory(p, ec))
    throw Error("--out '" + out_dir + "' exists and is not a directory");
  return p;
}

bool process_alive(long pid) {
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// The pid in a sibling's name ".NAME" + tag + "PID", or 0 when the name is not of that form.
long pid_in(const std::string& entry, const std::string& prefix) {
  if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0) return 0;
  const std::string digits = entry.substr(prefix.size());
  if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return 0;
  return std::stol(digits);
}

// Moves the entries of `from` that are not part of the set into `to` (files a user keeps beside
// the set), leaving any that `to` already has.
void move_back_others(const fs::path& from, const fs::path& to) {
  for (const auto& e : fs::directory_iterator(from)) {
    const std::string name = e.path().filename().string();
    if (in_set(name) || fs::exists(fs::symlink_status(to / name))) continue;
    fs::rename(e.path(), to / name);
  }
}

// A prepare killed while it built OUT's new set leaves ".NAME.tmp-PID"; one killed while it
// swapped the sets leaves the old set as ".NAME.old-PID". Those of processes that are gone are
// removed, after putting back an old set that OUT lacks, or the user's files that it held.
void sweep_stale(const fs::path& out) try {
  const fs::path parent = out.parent_path();
  const std::string name = out.filename().string();
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return;
  std::vector<fs::path> olds, tmps;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string entry = e.path().filename().string();
    // This process has made nothing yet: a name with its pid is from an earlier one.
    auto stale = [](long pid) { return pid > 0 && (pid == ::getpid() || !process_alive(pid)); };
    if (stale(pid_in(entry, "." + name + ".old-"))) olds.push_back(e.path());
    if (stale(pid_in(entry, "." + name + ".tmp-"))) tmps.push_back(e.path());
  }
  for (const fs::path& old : olds) {
    if (!fs::exists(fs::symlink_status(out, ec))) {
      fs::rename(old, out, ec);  // the new set never made it: the old one stays
      if (!ec) continue;
    }
    try {
      move_back_others(old, out);
      fs::remove_all(old);
    } catch (const fs::filesystem_error&) {
      // Left for a later run: it may still hold a user's files.
    }
  }
  // A mount point as --out gets its temporary directory inside (see replace_files_in).
  if (fs::is_directory(out, ec))
    for (const auto& e : fs::directory_iterator(out, ec)) {
      const long pid = pid_in(e.path().filename().string(), "." + name + ".tmp-");
      if (pid > 0 && (pid == ::getpid() || !process_alive(pid))) tmps.push_back(e.path());
    }
  for (const fs::path& tmp : tmps) fs::remove_all(tmp, ec);
} catch (const fs::filesystem_error&) {
  // Sweeping is housekeeping: what cannot be swept now stays for a later run.
}

// --out is a mount point, which cannot be renamed: the set is copied into a temporary directory
// inside it, whose files then replace the old ones one by one, the tokenizer's last. (The shards
// carry their tokenizer's hash: a set that a crash left mixed is refused when used, not trusted.)
void replace_files_in(const fs::path& tmp, const fs::path& out) {
  const fs::path inner = out / tmp.filename();
  fs::remove_all(inner);
  fs::create_directory(inner);
  try {
    const std::vector<std::string> files = set_files_in(tmp);
    for (const std::string& f : files) {
      fs::copy_file(tmp / f, inner / f);
      sync_path(inner / f);
    }
    sync_path(inner);
    for (const char* f : kSetFiles)  // the old set's tokenizer files that the new one has not
      if (std::find(files.begin(), files.end(), f) == files.end()) fs::remove(out / f);
    for (const std::string& f : files) fs::rename(inner / f, out / f);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(inner, ec);
    throw;
  }
  std::error_code ec;
  fs::remove_all(inner, ec);
  fs::remove_all(tmp, ec);
  sync_path_quietly(out);
}

// Puts the complete set in `tmp` in the place of `out`. A user's other files in `out` move over.
void swap_into_place(const fs::path& tmp, const fs::path& out) {
  const fs::path parent = out.parent_path();
  if (!fs::exists(fs::symlink_status(out))) {
    fs::rename(tmp, out);
    sync_path_quietly(parent);
    return;
  }
  const fs::path old =
      parent / ("." + out.filename().string() + ".old-" + std::to_string(::getpid()));
  fs::remove_all(old);
  if (std::error_code ec; fs::rename(out, old, ec), ec) {
    if (ec == std::errc::device_or_resource_busy || ec == std::errc::cross_device_link)
      return replace_files_in(tmp, out);
    throw fs::filesystem_error("cannot rename", out, old, ec);
  }
  try {
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::rename(old, out, ec);
    throw;
  }
  try {
    move_back_others(old, out);
  } catch (const fs::filesystem_error& e) {
    throw Error("wrote a new set to " + out.string() + ", but could not move the other files of " +
                "the old one back from " + old.string() + " (" + e.code().message() +
                "): move them by hand");
  }
  std::error_code ec;
  fs::remove_all(old, ec);  // what a failure leaves, the next run sweeps
  sync_path_quietly(parent);
}

// The set's files, written to a temporary sibling of --out, which then takes its place as a
// whole: whatever fails, --out holds the old set or the new one, never a mix.
void write_set(const fs::path& out, const Tokenizer& tok, const char* tok_name,
               const std::string& model_bytes, const std::string& config_bytes,
               const std::vector<int32_t>& train, const std::vector<int32_t>& val,
               const nlohmann::json& meta) {
  const uint64_t vocab = static_cast<uint64_t>(tok.vocab_size());
  const fs::path tmp =
      out.parent_path() / ("." + out.filename().string() + ".tmp-" + std::to_string(::getpid()));
  try {
    fs::create_directories(out.parent_path());
    fs::remove_all(tmp);
    fs::create_directory(tmp);
    std::error_code ec;
    if (const auto st = fs::status(out, ec); fs::is_directory(st))
      fs::permissions(tmp, st.permissions(), ec);
    write_file_checked((tmp / tok_name).string(), model_bytes);
    if (!config_bytes.empty())
      write_file_checked((tmp / "tokenizer_config.json").string(), config_bytes);
    const Tokenizer written((tmp / tok_name).string());
    if (written.hash() != tok.hash())
      throw Error("cannot write " + (tmp / tok_name).string() +
                  ": it does not read back as written");
    const std::pair<const char*, const std::vector<int32_t>*> shards[] = {{"train.bin", &train},
                                                                          {"val.bin", &val}};
    for (const auto& [name, tokens] : shards) {
      const std::string path = (tmp / name).string();
      write_shard(path, *tokens, vocab, tok.hash());
      const TokenShard back = read_shard(path);  // a short write shows as a truncated shard
      if (back.tokens != *tokens || back.header.tokenizer_hash != tok.hash())
        throw Error("cannot write " + path + ": it does not read back as written");
    }
    write_file_checked((tmp / "meta.json").string(), meta.dump(1) + "\n");
    for (const std::string& f : set_files_in(tmp)) sync_path(tmp / f);
    sync_path(tmp);
    swap_into_place(tmp, out);
  } catch (const fs::filesystem_error& e) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    const fs::path& p = e.path1().empty() ? out : e.path1();
    throw Error("cannot write " + p.string() + ": " + e.code().message());
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
}

}  // namespace

std::vector<std::string> read_text_lines(const std::string& path,
                                         std::vector<int64_t>* line_numbers, bool allow_empty) {
  std::vector<std::string> lines;
  read_text(path, lines, line_numbers, allow_empty);
  return lines;
}

void prepare(const PrepareOptions& opt) {
  if (opt.texts.empty()) throw Error("prepare: give at least one --text FILE");
  if (opt.out_dir.empty()) throw Error("prepare: give --out DIR");
  if (!(opt.val_fraction > 0.0 && opt.val_fraction < 1.0))
    throw Error("prepare: --val-fraction must lie strictly between 0 and 1");
  if (opt.tokenizer.empty() && (opt.vocab_size < 260 || opt.vocab_size > 1 << 20))
    throw Error("prepare: --vocab must be between 260 (256 bytes + specials) and 1048576");
  // The texts are read whole before anything is written, and a --tokenizer inside --out too (the
  // set is replaced as a whole): only a text that is one of the set's files is refused.
  for (const auto& path : opt.texts) check_text_file(path);
  check_output_dir("--out", opt.out_dir, {std::begin(kSetFiles), std::end(kSetFiles)}, opt.texts);
  const fs::path out = resolve_out(opt.out_dir);

  // Everything is read, checked and computed in memory first: a --tokenizer inside --out too.
  std::vector<std::string> lines;
  nlohmann::json inputs = nlohmann::json::array();
  for (const auto& path : opt.texts) inputs.push_back(read_text(path, lines));
  std::string model_bytes, config_bytes;
  const bool bpe = is_tokenizer_json(opt.tokenizer);
  if (!opt.tokenizer.empty()) {
    const std::vector<std::string> files = read_tokenizer(opt.tokenizer);
    model_bytes = files[0];
    if (files.size() > 1) config_bytes = files[1];
    const Tokenizer check(Tokenizer::from_bytes, model_bytes, opt.tokenizer, config_bytes);
  }
  sweep_stale(out);
  if (opt.tokenizer.empty()) {
    std::printf("training a %d-token BPE tokenizer on %zu lines\n", opt.vocab_size, lines.size());
    std::fflush(stdout);
    try {
      model_bytes = Tokenizer::train(lines, opt.vocab_size);
    } catch (const VocabSizeError& e) {
      const std::string v = std::to_string(opt.vocab_size), n = std::to_string(e.limit);
      if (e.too_large)
        throw Error("--vocab " + v +
                    " is more than this text can give: sentencepiece found at most " + n +
                    " pieces; try --vocab " + n + " or less");
      throw Error("--vocab " + v +
                  " is too small for this text: its characters, the 256 byte pieces and the 3 "
                  "special pieces alone need " +
                  n + "; try --vocab " + n + " or more");
    }
  }
  const char* tok_name = bpe ? "tokenizer.json" : "tokenizer.model";
  const Tokenizer tok(Tokenizer::from_bytes, model_bytes, (out / tok_name).string(), config_bytes);

  // Lines go in blocks of 64; the blocks where ⌊(i+1)·f⌋ > ⌊i·f⌋ are validation, which spreads the
  // validation set evenly over the corpus. A text too short for that gives its last block.
  const size_t block = 64, blocks = (lines.size() + block - 1) / block;
  std::vector<bool> is_val(blocks);
  bool any = false;
  for (size_t b = 0; b < blocks; ++b)
    any |= is_val[b] = std::floor((b + 1) * opt.val_fraction) > std::floor(b * opt.val_fraction);
  if (!any && blocks >= 2) is_val[blocks - 1] = true;
  std::vector<int32_t> train, val;
  for (size_t b = 0; b < blocks; ++b) {
    auto& dst = is_val[b] ? val : train;
    for (size_t i = b * block; i < std::min(lines.size(), (b + 1) * block); ++i) {
      dst.push_back(tok.bos_id());
      const auto ids = tok.encode(lines[i]);
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
  }
  if (val.empty())
    throw Error(
        "prepare: the text has fewer than 128 lines, too few to hold some out for validation");
  const uint64_t vocab = static_cast<uint64_t>(tok.vocab_size());
  // The unigram baseline: cross-entropy of the validation tokens under the training tokens'
  // frequencies (add-one smoothed), in nats. A model that learned anything beats it.
  std::vector<double> counts(vocab, 1.0);
  for (int32_t t : train) counts[t] += 1.0;
  const double total = static_cast<double>(train.size()) + static_cast<double>(vocab);
  double nll = 0.0;
  for (int32_t t : val) nll -= std::log(counts[t] / total);
  const double unigram = nll / static_cast<double>(val.size());
  const nlohmann::json meta = {{"vocab_size", vocab},
                               {"tokenizer_hash", hex16(tok.hash())},
                               {"train_tokens", train.size()},
                               {"val_tokens", val.size()},
                               {"val_fraction", opt.val_fraction},
                               {"unigram_val_loss", std::round(unigram * 1e6) / 1e6},
                               {"inputs", inputs}};

  write_set(out, tok, tok_name, model_bytes, config_bytes, train, val, meta);
  std::printf(
      "wrote %s: vocab %llu, %zu train tokens, %zu validation tokens; unigram baseline "
      "validation loss %.4f\n",
      opt.out_dir.c_str(), static_cast<unsigned long long>(vocab), train.size(), val.size(),
      unigram);
}

}  // namespace parallama
