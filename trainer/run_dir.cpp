#include "trainer/run_dir.h"

#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>

#include "trainer/output/atomic_write.h"

namespace loom::trainer {

namespace fs = std::filesystem;

namespace {
std::string default_out_dir(const Recipe& recipe) {
  return "runs/" + fs::path(recipe.source()).stem().string();
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

RunDir::RunDir(const Recipe& recipe, const TrainOptions& options, std::ostream& out, bool writer)
    : path_(options.out_dir.empty() ? default_out_dir(recipe) : options.out_dir),
      keep_(int(recipe.get_int("train.keep_checkpoints"))) {
  const std::optional<std::string> latest =
      fs::exists(path_) ? latest_checkpoint(path_) : std::nullopt;
  if (options.resume) {
    LOOM_CHECK(latest.has_value(), "[train] --resume: no complete checkpoint under ", path_,
               "/checkpoints (start without --resume, or pass the run's --out)");
    resume_ = load_checkpoint(*latest);
    out << "resuming from " << *latest << " (step " << resume_->step << ")\n";
  } else {
    LOOM_CHECK(!latest.has_value(), "[train] ", path_, " already holds checkpoints (newest ",
               *latest, "); pass --resume to continue that run or choose another --out");
  }
  if (!writer) return;
  std::error_code ec;
  fs::create_directories(samples_dir(), ec);
  LOOM_CHECK(!ec, "[train] cannot create ", samples_dir(), ": ", ec.message());
  const std::string recipe_path = path_ + "/recipe.toml";
  const std::string text = recipe.to_toml();
  if (options.resume && fs::exists(recipe_path)) {
    const std::string previous = read_text(recipe_path);
    if (previous != text) {
      write_file_atomic(path_ + "/recipe.previous.toml", previous, "train");
      out << "note: the recipe differs from the run's; the earlier one is kept as " << path_
          << "/recipe.previous.toml\n";
    }
  }
  write_file_atomic(recipe_path, text, "train");
  metrics_ = std::make_unique<MetricsWriter>(path_ + "/metrics.jsonl", options.resume);
}

MetricsWriter& RunDir::metrics() {
  LOOM_ASSERT(metrics_ != nullptr);
  return *metrics_;
}

std::string RunDir::save(const CheckpointContents& contents) const {
  LOOM_ASSERT(metrics_ != nullptr);  // only the writer saves
  return save_checkpoint(path_, contents, keep_);
}

}  // namespace loom::trainer
