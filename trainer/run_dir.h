#pragma once
// A run directory: recipe.toml (resolved), metrics.jsonl, samples/, checkpoints/.
//
// A fresh run refuses a directory that already holds checkpoints (nothing of an earlier run is
// overwritten); --resume reopens it and hands back the newest complete checkpoint. The resolved
// recipe is written atomically on start (a resumed run keeps the earlier recipe beside it as
// recipe.previous.toml when they differ, and says so).
//
// Under data parallelism only rank 0 writes (writer = true); the other ranks build a reader,
// which makes the same checks and loads the same resume checkpoint (the run directory must be on
// a filesystem every rank sees) but creates and writes nothing: calling metrics() or save() on a
// reader is a bug (aborts).
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>

#include "trainer/checkpoint/checkpoint.h"
#include "trainer/output/metrics.h"
#include "trainer/recipe/recipe.h"

namespace loom::trainer {

struct TrainOptions {
  std::string out_dir;  // empty: runs/<recipe file stem>
  bool resume = false;
};

class RunDir {
 public:
  RunDir(const Recipe& recipe, const TrainOptions& options, std::ostream& out, bool writer = true);

  const std::string& path() const { return path_; }
  std::string samples_dir() const { return path_ + "/samples"; }
  // The checkpoint to continue from (resume only).
  const std::optional<CheckpointContents>& resume_from() const { return resume_; }
  MetricsWriter& metrics();
  // Writes checkpoints/<step>/ keeping the newest train.keep_checkpoints.
  std::string save(const CheckpointContents& contents) const;

 private:
  std::string path_;
  int keep_;
  std::optional<CheckpointContents> resume_;
  std::unique_ptr<MetricsWriter> metrics_;
};

}  // namespace loom::trainer
