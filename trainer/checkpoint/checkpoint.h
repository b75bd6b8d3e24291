#pragma once
// Training checkpoints (DESIGN.md "Trainer and recipes"): everything needed to resume a run
// bit-exactly on the CPU, written so that a crash or an error never damages a good checkpoint.
//
// A checkpoint is the directory run_dir/checkpoints/<step>/ (plain decimal step) holding
//   model.safetensors, ema.safetensors, optimizer.safetensors  whole logical tensors, in order
//   state.json    cereal JSON: format, version, step, counters, generators, scalars
//   recipe.toml   the resolved recipe text, byte for byte
//   manifest.json cereal JSON: file name -> {size, crc32 (zlib)} for every file above
// The manifest is written last, so a directory with a manifest is complete.
//
// save_checkpoint writes everything into checkpoints/.tmp-<step>-<pid>, fsyncing each file and
// then the directory, and only then renames it to checkpoints/<step> (an existing <step> is
// swapped out only at that point) and fsyncs checkpoints/. Then it deletes all but the newest
// `keep_last` complete checkpoints, never the one just written (keep_last <= 0 keeps all); a
// deletion that fails is left for the next save. If anything fails before the rename, the temp
// directory is removed, every earlier checkpoint is untouched, and loom::Error is thrown.
//
// load_checkpoint verifies before it parses: manifest.json present, every required file listed,
// every listed file present with the recorded size and CRC-32. Every error is a loom::Error
// "[checkpoint] <file>: <problem>" naming the offending file. Tensors come back as contiguous
// CPU tensors in the order they were saved; floating-point scalars (NaN and infinities
// included) and 64-bit integers come back exactly.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace loom::trainer {

// The three integers that pin a Generator's future draws.
struct GeneratorState {
  uint64_t seed = 0, stream = 0, offset = 0;
  bool operator==(const GeneratorState&) const = default;
};

GeneratorState generator_state(const Generator& gen);
// A generator that continues exactly where the saved one stopped.
Generator restore_generator(const GeneratorState& state);

struct CheckpointContents {
  int64_t step = 0;                                       // >= 0; names the directory
  std::string recipe_toml;                                // the resolved recipe text
  std::vector<std::pair<std::string, Tensor>> model;      // named tensors (whole logical tensors)
  std::vector<std::pair<std::string, Tensor>> ema;        // may be empty
  std::vector<std::pair<std::string, Tensor>> optimizer;  // e.g. "exp_avg.<param>"
  std::map<std::string, int64_t> counters;                // e.g. optimizer step, data position
  std::map<std::string, GeneratorState> generators;       // named RNG states
  std::map<std::string, double> scalars;                  // e.g. last loss
};

// Writes run_dir/checkpoints/<step>/ (creating run_dir/checkpoints as needed) and returns it.
std::string save_checkpoint(const std::string& run_dir, const CheckpointContents& contents,
                            int keep_last);

// Loads and verifies the checkpoint directory `checkpoint_dir`.
CheckpointContents load_checkpoint(const std::string& checkpoint_dir);

// The complete checkpoint (one with a manifest.json) with the largest numeric step under
// run_dir/checkpoints; temp directories and directories without a manifest are ignored. The
// files are not verified here: load_checkpoint does that. nullopt when there is none.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);

// Turns a user's CHECKPOINT argument into a checkpoint directory: a directory holding
// manifest.json is returned as is; a run directory (one holding checkpoints/) gives its latest
// checkpoint. Anything else, or a run directory without a complete checkpoint, throws saying
// which of the two was expected.
std::string resolve_checkpoint(const std::string& path);

}  // namespace loom::trainer
