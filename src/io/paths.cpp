#include "io/paths.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tensor/error.h"

namespace fs = std::filesystem;

namespace parallama {

namespace {

// a is b, or lies inside b (both resolved).
bool within(const fs::path& a, const fs::path& b) {
  auto ai = a.begin(), bi = b.begin();
  for (; bi != b.end(); ++ai, ++bi) {
    if (bi->empty() && std::next(bi) == b.end()) break;  // b's trailing separator
    if (ai == a.end() || *ai != *bi) return false;
  }
  return true;
}

std::string kind_of(const fs::file_status& st) {
  switch (st.type()) {
    case fs::file_type::directory:
      return "a directory";
    case fs::file_type::fifo:
      return "a FIFO";
    case fs::file_type::character:
    case fs::file_type::block:
      return "a device";
    case fs::file_type::socket:
      return "a socket";
    default:
      return "not a regular file";
  }
}

// The nearest existing directory at or above p; Error when a non-directory is in the way.
fs::path existing_ancestor(const std::string& what, const fs::path& p) {
  fs::path d = p;
  std::error_code ec;
  while (!fs::exists(d, ec)) {
    if (!d.has_parent_path() || d.parent_path() == d) break;
    d = d.parent_path();
  }
  if (!fs::is_directory(d, ec))
    throw Error(what + " '" + p.string() + "': " + d.string() + " is not a directory");
  return d;
}

void check_writable(const std::string& what, const std::string& shown, const fs::path& dir) {
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error(what + " '" + shown + "': cannot write in " + dir.string() + " (" +
                std::strerror(errno) + ")");
}

// Error when `out` is one of `inputs` or lies inside one (an input directory).
void check_not_input(const std::string& what, const std::string& shown, const fs::path& out,
                     const std::vector<std::string>& inputs) {
  for (const std::string& in : inputs) {
    if (in.empty()) continue;
    const fs::path r = resolved(in);
    if (out == r)
      throw Error(what + " '" + shown + "' is also an input (" + in +
                  "), which this command reads; choose another");
    if (within(out, r))
      throw Error(what + " '" + shown + "' lies inside " + in +
                  ", which this command reads; choose a place outside it");
  }
}

}  // namespace

fs::path resolved(const std::string& path) {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) return fs::absolute(path).lexically_normal();
  // weakly_canonical keeps a trailing separator; a/ and a are one place.
  return p.has_filename() || p == p.root_path() ? p : p.parent_path();
}

void check_input_file(const std::string& path, const std::string& what, int64_t max_bytes) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw Error("cannot read " + what + " '" + path + "': no such file");
  if (!fs::is_regular_file(st))
    throw Error(what + " '" + path + "' is " + kind_of(st) + ", not a regular file");
  const auto size = fs::file_size(path, ec);
  if (!ec && static_cast<int64_t>(size) > max_bytes)
    throw Error(what + " '" + path + "' holds " + std::to_string(size) + " bytes, more than the " +
                std::to_string(max_bytes) + " such a file may have");
}

std::ifstream open_input(const std::string& path, const std::string& what, int64_t max_bytes) {
  check_input_file(path, what, max_bytes);
  errno = 0;
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + what + " '" + path + "': " + std::strerror(errno));
  return f;
}

void check_output_file(const std::string& what, const std::string& path,
                       const std::vector<std::string>& inputs, bool force) {
  if (path.empty()) throw Error(what + ": an empty path");
  const fs::path out = resolved(path);
  check_not_input(what, path, out, inputs);
  std::error_code ec;
  const fs::file_status st = fs::status(out, ec);
  if (fs::is_directory(st))
    throw Error(what + " '" + path + "' is a directory; give the file to write");
  if (fs::exists(st) && !fs::is_regular_file(st))
    throw Error(what + " '" + path + "' is " + kind_of(st) + ", not a file to write");
  if (fs::exists(st) && !force)
    throw Error(what + " '" + path + "' exists; give --force to overwrite it, or another name");
  const fs::path dir = out.parent_path();
  if (!fs::is_directory(dir, ec))
    throw Error(what + " '" + path + "': no directory " + dir.string() + " to write it in");
  check_writable(what, path, dir);
}

void check_output_dir(const std::string& what, const std::string& dir,
                      const std::vector<std::string>& names,
                      const std::vector<std::string>& inputs) {
  if (dir.empty()) throw Error(what + ": an empty path");
  const fs::path out = resolved(dir);
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_directory(out, ec))
    throw Error(what + " '" + dir + "' exists and is not a directory");
  check_not_input(what, dir, out, inputs);
  for (const std::string& in : inputs) {
    if (in.empty()) continue;
    const fs::path r = resolved(in);
    for (const std::string& name : names)
      if (within(r, out / name))
        throw Error(what + " '" + dir + "': writing its " + name + " would destroy " + in +
                    ", which this command reads; choose another directory");
  }
  check_writable(what, dir, existing_ancestor(what, out));
}

bool is_tokenizer_json(const std::string& main) {
  return main.size() >= 5 && main.compare(main.size() - 5, 5, ".json") == 0;
}

std::vector<std::string> tokenizer_files(const std::string& main) {
  std::vector<std::string> files = {main};
  if (is_tokenizer_json(main)) {
    const fs::path config = fs::path(main).parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (fs::exists(config, ec)) files.push_back(config.string());
  }
  return files;
}

std::string tokenizer_in(const std::string& dir, const std::string& what) {
  std::error_code ec;
  for (const char* name : {"tokenizer.model", "tokenizer.json"})
    if (fs::exists(fs::path(dir) / name, ec)) return (fs::path(dir) / name).string();
  throw Error(what + " " + dir + " has no tokenizer (tokenizer.model or tokenizer.json)");
}

void copy_tokenizer(const std::string& main, const std::string& dir) {
  const std::vector<std::string> files = tokenizer_files(main);
  for (size_t i = 0; i < files.size(); ++i) {
    const char* name = !is_tokenizer_json(main) ? "tokenizer.model"
                       : i == 0                 ? "tokenizer.json"
                                                : "tokenizer_config.json";
    fs::copy_file(files[i], fs::path(dir) / name, fs::copy_options::overwrite_existing);
  }
}

}  // namespace parallama
