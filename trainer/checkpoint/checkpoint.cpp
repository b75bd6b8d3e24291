#include "trainer/checkpoint/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <cereal/archives/json.hpp>

#include "core/safetensors.h"
#include "trainer/output/atomic_write.h"

namespace loom::trainer {

namespace fs = std::filesystem;

// Found by cereal through argument-dependent lookup, so it lives beside GeneratorState.
template <class Archive>
void serialize(Archive& ar, GeneratorState& g) {
  ar(cereal::make_nvp("seed", g.seed), cereal::make_nvp("stream", g.stream),
     cereal::make_nvp("offset", g.offset));
}

namespace {

constexpr const char* kTag = "checkpoint";
constexpr const char* kStateFormat = "loom-checkpoint-state";
constexpr const char* kManifestFormat = "loom-checkpoint-manifest";
constexpr int kVersion = 1;

constexpr const char* kModel = "model.safetensors";
constexpr const char* kEma = "ema.safetensors";
constexpr const char* kOptimizer = "optimizer.safetensors";
constexpr const char* kState = "state.json";
constexpr const char* kRecipe = "recipe.toml";
constexpr const char* kManifest = "manifest.json";
const char* const kRequired[] = {kModel, kEma, kOptimizer, kState, kRecipe};

struct ManifestEntry {
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

template <class Archive>
void serialize(Archive& ar, ManifestEntry& e) {
  ar(cereal::make_nvp("size", e.size), cereal::make_nvp("crc32", e.crc32));
}

// Only canonical decimal names count as checkpoints, so "7" and "007" can never both claim
// step 7 and temp or hand-made directories are never mistaken for one.
std::optional<int64_t> parse_step(const std::string& name) {
  if (name.empty() || name.size() > 18) return std::nullopt;
  int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), v);
  if (ec != std::errc() || ptr != name.data() + name.size()) return std::nullopt;
  if (v < 0 || std::to_string(v) != name) return std::nullopt;
  return v;
}

// Complete checkpoints under `root` by step, oldest first.
std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const fs::path& root) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  fs::directory_iterator it(root, ec);
  if (ec) return found;
  for (const fs::directory_entry& entry : it) {
    const auto step = parse_step(entry.path().filename().string());
    if (!step || !entry.is_directory(ec)) continue;
    if (fs::is_regular_file(entry.path() / kManifest, ec)) found.emplace_back(*step, entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LOOM_CHECK(in, "[checkpoint] ", path, ": cannot open: ", std::strerror(errno));
  std::ostringstream os;
  os << in.rdbuf();
  LOOM_CHECK(!in.bad(), "[checkpoint] ", path, ": read failed");
  return os.str();
}

// Size and CRC are taken from one pass over the bytes actually on disk, so the manifest
// describes what a later load will read, not what this process meant to write.
ManifestEntry checksum_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  LOOM_CHECK(f, "[checkpoint] ", path, ": cannot open: ", std::strerror(errno));
  ManifestEntry e;
  uLong crc = ::crc32(0L, Z_NULL, 0);
  std::vector<unsigned char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) {
    crc = ::crc32(crc, buf.data(), uInt(n));
    e.size += n;
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  LOOM_CHECK(!failed, "[checkpoint] ", path, ": read failed");
  e.crc32 = uint32_t(crc);
  return e;
}

// JSON objects keyed by name read better than cereal's default [{"key":..,"value":..}] form.
template <class T>
void save_map(cereal::JSONOutputArchive& ar, const char* name, const std::map<std::string, T>& m) {
  ar.setNextName(name);
  ar.startNode();
  for (const auto& [key, value] : m) ar(cereal::make_nvp(key, value));
  ar.finishNode();
}

template <class T>
void load_map(cereal::JSONInputArchive& ar, const char* name, std::map<std::string, T>& m,
              const std::string& path) {
  ar.setNextName(name);
  ar.startNode();
  while (const char* key_ptr = ar.getNodeName()) {
    const std::string key = key_ptr;
    T value{};
    ar(value);
    LOOM_CHECK(m.emplace(key, value).second, "[checkpoint] ", path, ": duplicate key \"", key,
               "\" in \"", name, "\"");
  }
  ar.finishNode();
}

// cereal reports malformed or mistyped JSON with its own exceptions; they are turned into
// loom::Error naming the file so the CLI reports them like every other bad input.
void parse_json(const std::string& path, const std::function<void(cereal::JSONInputArchive&)>& f) {
  std::istringstream in(read_text(path));
  try {
    cereal::JSONInputArchive ar(in);
    f(ar);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    LOOM_FAIL("[checkpoint] ", path, ": malformed JSON: ", e.what());
  }
}

void check_format(const std::string& path, const std::string& format, const char* expected,
                  int version) {
  LOOM_CHECK(format == expected, "[checkpoint] ", path, ": format \"", format, "\", expected \"",
             expected, "\"");
  LOOM_CHECK(version == kVersion, "[checkpoint] ", path, ": version ", version,
             " is not supported (this build reads version ", kVersion, ")");
}

std::string state_json(const CheckpointContents& c) {
  std::ostringstream os;
  {
    cereal::JSONOutputArchive ar(os);
    const std::string format = kStateFormat;
    ar(cereal::make_nvp("format", format), cereal::make_nvp("version", kVersion),
       cereal::make_nvp("step", c.step));
    save_map(ar, "counters", c.counters);
    save_map(ar, "generators", c.generators);
    save_map(ar, "scalars", c.scalars);
  }  // the archive completes the document when it is destroyed
  os << '\n';
  return os.str();
}

std::string manifest_json(const std::map<std::string, ManifestEntry>& files) {
  std::ostringstream os;
  {
    cereal::JSONOutputArchive ar(os);
    const std::string format = kManifestFormat;
    ar(cereal::make_nvp("format", format), cereal::make_nvp("version", kVersion));
    save_map(ar, "files", files);
  }
  os << '\n';
  return os.str();
}

std::map<std::string, ManifestEntry> read_manifest(const std::string& path) {
  std::map<std::string, ManifestEntry> files;
  parse_json(path, [&](cereal::JSONInputArchive& ar) {
    std::string format;
    int version = 0;
    ar(cereal::make_nvp("format", format), cereal::make_nvp("version", version));
    check_format(path, format, kManifestFormat, version);
    load_map(ar, "files", files, path);
  });
  return files;
}

// Removes the temp directory unless the save got as far as renaming it into place.
class TempDir {
 public:
  explicit TempDir(fs::path path) : path_(std::move(path)) {}
  ~TempDir() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  void dismiss() { path_.clear(); }

 private:
  fs::path path_;
};

// Moves the finished temp directory to `final_dir`. An existing `final_dir` (the same step
// saved again) is swapped out atomically where the filesystem can exchange two names, so at
// every instant either the old or the new checkpoint sits under that name.
void commit_dir(const fs::path& tmp, const fs::path& final_dir, const fs::path& root) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(final_dir, ec))) {
    LOOM_CHECK(::rename(tmp.c_str(), final_dir.c_str()) == 0, "[checkpoint] ", final_dir.string(),
               ": rename from ", tmp.string(), " failed: ", std::strerror(errno));
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp, ec);  // now the old checkpoint; a leftover is ignored by every reader
    return;
  }
  LOOM_CHECK(errno == EINVAL || errno == ENOSYS || errno == ENOTSUP, "[checkpoint] ",
             final_dir.string(), ": exchange with ", tmp.string(),
             " failed: ", std::strerror(errno));
  // No atomic exchange here: park the old one under a dot name (ignored by readers) first.
  const fs::path old =
      root / (".old-" + final_dir.filename().string() + "-" + std::to_string(::getpid()));
  fs::remove_all(old, ec);
  LOOM_CHECK(::rename(final_dir.c_str(), old.c_str()) == 0, "[checkpoint] ", final_dir.string(),
             ": cannot move the previous checkpoint aside: ", std::strerror(errno));
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    const int err = errno;
    ::rename(old.c_str(), final_dir.c_str());
    LOOM_FAIL("[checkpoint] ", final_dir.string(), ": rename from ", tmp.string(),
              " failed: ", std::strerror(err));
  }
  fs::remove_all(old, ec);
}

void prune(const fs::path& root, int64_t just_written, int keep_last) {
  if (keep_last <= 0) return;
  auto found = complete_checkpoints(root);
  std::reverse(found.begin(), found.end());
  for (size_t i = 0; i < found.size(); ++i) {
    if (i < size_t(keep_last) || found[i].first == just_written) continue;
    // The manifest goes first: should the deletion stop halfway, what is left is an incomplete
    // directory that readers skip, never a "complete" checkpoint with files missing.
    std::error_code ec;
    fs::remove(found[i].second / kManifest, ec);
    fs::remove_all(found[i].second, ec);
  }
}

}  // namespace

GeneratorState generator_state(const Generator& gen) {
  return {gen.seed(), gen.stream(), gen.offset()};
}

Generator restore_generator(const GeneratorState& state) {
  Generator gen(state.seed, state.stream);
  gen.set_offset(state.offset);
  return gen;
}

std::string save_checkpoint(const std::string& run_dir, const CheckpointContents& contents,
                            int keep_last) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = root / std::to_string(contents.step);
  LOOM_CHECK(contents.step >= 0, "[checkpoint] ", run_dir, ": step must be >= 0, got ",
             contents.step);

  std::error_code ec;
  const bool created = fs::create_directories(root, ec);
  LOOM_CHECK(!ec, "[checkpoint] ", root.string(), ": cannot create: ", ec.message());
  if (created) fsync_directory(fs::path(run_dir).string(), kTag);

  // A container restarts with the same pids, so a leftover of this very name is possible.
  TempDir tmp(root / (".tmp-" + std::to_string(contents.step) + "-" + std::to_string(::getpid())));
  fs::remove_all(tmp.path(), ec);
  try {
    fs::create_directory(tmp.path(), ec);
    LOOM_CHECK(!ec, "[checkpoint] ", tmp.path().string(), ": cannot create: ", ec.message());
    const auto file = [&](const char* name) { return (tmp.path() / name).string(); };
    save_safetensors(file(kModel), contents.model);
    save_safetensors(file(kEma), contents.ema);
    save_safetensors(file(kOptimizer), contents.optimizer);
    write_file_synced(file(kState), state_json(contents), kTag);
    write_file_synced(file(kRecipe), contents.recipe_toml, kTag);
    std::map<std::string, ManifestEntry> files;
    for (const char* name : kRequired) files[name] = checksum_file(file(name));
    write_file_synced(file(kManifest), manifest_json(files), kTag);
    fsync_directory(tmp.path().string(), kTag);
    commit_dir(tmp.path(), final_dir, root);
    tmp.dismiss();
  } catch (const Error& e) {
    LOOM_FAIL("[checkpoint] ", final_dir.string(),
              ": not saved (earlier checkpoints are untouched): ", e.what());
  } catch (const std::exception& e) {
    LOOM_FAIL("[checkpoint] ", final_dir.string(),
              ": not saved (earlier checkpoints are untouched): ", e.what());
  }
  fsync_directory(root.string(), kTag);
  prune(root, contents.step, keep_last);
  return final_dir.string();
}

CheckpointContents load_checkpoint(const std::string& checkpoint_dir) {
  const fs::path dir(checkpoint_dir);
  std::error_code ec;
  LOOM_CHECK(fs::is_directory(dir, ec), "[checkpoint] ", checkpoint_dir,
             ": not a directory (expected run_dir/checkpoints/<step>)");
  const auto path_of = [&](const std::string& name) { return (dir / name).string(); };

  const std::string manifest_path = path_of(kManifest);
  LOOM_CHECK(fs::is_regular_file(manifest_path, ec), "[checkpoint] ", manifest_path,
             ": missing (the save did not finish, or this is not a checkpoint directory)");
  const auto files = read_manifest(manifest_path);
  for (const char* name : kRequired)
    LOOM_CHECK(files.count(name), "[checkpoint] ", manifest_path, ": does not list ", name);
  for (const auto& [name, expected] : files) {
    LOOM_CHECK(!name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos,
               "[checkpoint] ", manifest_path, ": invalid file name \"", name, "\"");
    const std::string path = path_of(name);
    LOOM_CHECK(fs::is_regular_file(path, ec), "[checkpoint] ", path,
               ": missing (listed in manifest.json)");
    const ManifestEntry actual = checksum_file(path);
    LOOM_CHECK(actual.size == expected.size, "[checkpoint] ", path, ": size ", actual.size,
               " bytes, manifest.json records ", expected.size, " (file truncated or modified)");
    LOOM_CHECK(actual.crc32 == expected.crc32, "[checkpoint] ", path,
               ": checksum mismatch (file corrupt or modified)");
  }

  CheckpointContents c;
  const std::string state_path = path_of(kState);
  parse_json(state_path, [&](cereal::JSONInputArchive& ar) {
    std::string format;
    int version = 0;
    ar(cereal::make_nvp("format", format), cereal::make_nvp("version", version));
    check_format(state_path, format, kStateFormat, version);
    ar(cereal::make_nvp("step", c.step));
    load_map(ar, "counters", c.counters, state_path);
    load_map(ar, "generators", c.generators, state_path);
    load_map(ar, "scalars", c.scalars, state_path);
  });
  LOOM_CHECK(c.step >= 0, "[checkpoint] ", state_path, ": negative step ", c.step);
  c.recipe_toml = read_text(path_of(kRecipe));
  c.model = load_safetensors(path_of(kModel)).tensors;
  c.ema = load_safetensors(path_of(kEma)).tensors;
  c.optimizer = load_safetensors(path_of(kOptimizer)).tensors;
  return c;
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  const auto found = complete_checkpoints(fs::path(run_dir) / "checkpoints");
  if (found.empty()) return std::nullopt;
  return found.back().second.string();
}

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  LOOM_CHECK(fs::exists(p, ec), "[checkpoint] ", path,
             ": does not exist (expected a checkpoint directory or a run directory)");
  LOOM_CHECK(fs::is_directory(p, ec), "[checkpoint] ", path,
             ": not a directory (expected a checkpoint directory or a run directory)");
  if (fs::is_regular_file(p / kManifest, ec)) return path;
  if (fs::is_directory(p / "checkpoints", ec)) {
    const auto latest = latest_checkpoint(path);
    LOOM_CHECK(latest, "[checkpoint] ", path,
               ": run directory has no complete checkpoint under checkpoints/");
    return *latest;
  }
  fs::path normal = p.lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();
  LOOM_CHECK(normal.parent_path().filename() != "checkpoints", "[checkpoint] ", path,
             ": incomplete checkpoint (no manifest.json: the save did not finish)");
  LOOM_FAIL("[checkpoint] ", path,
            ": neither a checkpoint directory (no manifest.json) nor a run directory (no "
            "checkpoints/)");
}

}  // namespace loom::trainer
