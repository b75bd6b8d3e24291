// End-to-end runs of `loom train` on a tiny synthetic job: resume equality, refusal to overwrite
// a run, interruption, classifier training, and the checkpoint commands.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/safetensors.h"
#include "testing.h"
#include "trainer/commands.h"
#include "trainer/output/metrics.h"
#include "trainer/signals.h"
#include "trainer/train.h"

namespace loom::trainer {
namespace fs = std::filesystem;

namespace {

// `top` goes before the first table (top-level keys such as task).
std::string tiny_recipe(int64_t steps, const std::string& top = "") {
  return top +
         "[model]\ninput_size = 8\nin_channels = 1\npatch_size = 2\nhidden_size = 32\n"
         "depth = 2\nnum_heads = 4\nnum_classes = 3\nnum_experts = 4\ntop_k = 2\n"
         "num_shared_experts = 1\n"
         "[data]\nsource = \"synthetic\"\nsynthetic_size = 64\nprefetch = 2\n"
         "[train]\nsteps = " +
         std::to_string(steps) +
         "\nbatch_size = 8\nlog_every = 1\nsample_every = 0\ncheckpoint_every = 2\n"
         "threads = 2\n[sample]\nsteps = 4\nper_class = 2\nsampler = \"ddim\"\n[eval]\n"
         "per_class = 4\nsteps = 3\n";
}

std::string temp_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("loom_e2e_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

std::vector<double> losses(const std::string& run_dir) {
  std::vector<double> out;
  for (const auto& row : read_metrics(run_dir + "/metrics.jsonl"))
    if (row.count("loss")) out.push_back(row.at("loss"));
  return out;
}

}  // namespace

TEST(TrainE2E, ResumeGivesBitIdenticalLosses) {
  std::ostringstream log;
  const std::string full = temp_dir("full"), part = temp_dir("part");
  train(Recipe::from_string(tiny_recipe(6), "full.toml"), {.out_dir = full}, log);
  train(Recipe::from_string(tiny_recipe(4), "part.toml"), {.out_dir = part}, log);
  train(Recipe::from_string(tiny_recipe(6), "part.toml"), {.out_dir = part, .resume = true}, log);
  const auto a = losses(full), b = losses(part);
  ASSERT_EQ(a.size(), 6u) << log.str();
  ASSERT_EQ(b.size(), 6u) << log.str();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i + 1;
  fs::remove_all(full);
  fs::remove_all(part);
}

// train.activation_checkpointing trains the same job: the same losses to rounding (the blocks'
// conditioning gradients are summed in another order). tests/dit checks the recomputation itself.
TEST(TrainE2E, ActivationCheckpointingKeepsTheLosses) {
  std::ostringstream log;
  const std::string plain = temp_dir("plain"), ckpt = temp_dir("ckpt");
  train(Recipe::from_string(tiny_recipe(4), "a.toml"), {.out_dir = plain}, log);
  train(Recipe::from_string(tiny_recipe(4), "b.toml", {"train.activation_checkpointing=true"}),
        {.out_dir = ckpt}, log);
  const auto a = losses(plain), b = losses(ckpt);
  ASSERT_EQ(a.size(), 4u) << log.str();
  ASSERT_EQ(b.size(), 4u) << log.str();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i])) << i;
  fs::remove_all(plain);
  fs::remove_all(ckpt);
}

TEST(TrainE2E, FreshRunRefusesADirWithCheckpoints) {
  std::ostringstream log;
  const std::string dir = temp_dir("refuse");
  train(Recipe::from_string(tiny_recipe(2), "r.toml"), {.out_dir = dir}, log);
  const auto before = fs::last_write_time(dir + "/checkpoints/2/manifest.json");
  EXPECT_THROW(train(Recipe::from_string(tiny_recipe(2), "r.toml"), {.out_dir = dir}, log), Error);
  EXPECT_EQ(fs::last_write_time(dir + "/checkpoints/2/manifest.json"), before);
  EXPECT_THROW(train(Recipe::from_string(tiny_recipe(2), "r.toml"),
                     {.out_dir = temp_dir("none"), .resume = true}, log),
               Error);
  fs::remove_all(dir);
}

TEST(TrainE2E, NonFiniteStepsAreSkippedThenTheRunStops) {
  // Images that are all NaN: every step's loss is non-finite.
  const std::string dir = temp_dir("nan"), data = dir + "_latents.safetensors";
  save_safetensors(
      data, {{"latents", full({16, 1, 8, 8}, std::nan(""))}, {"labels", zeros({16}, DType::i64)}});
  std::ostringstream log;
  const Recipe r = Recipe::from_string(
      tiny_recipe(10), "nan.toml",
      {"data.source=\"latents\"", "data.path=\"" + data + "\"", "train.max_nonfinite_steps=3"});
  testing::expect_error([&] { train(r, {.out_dir = dir}, log); },
                        {"3 steps in a row had a non-finite gradient or loss (steps 1 to 3)",
                         "train.max_nonfinite_steps = 3: lower optim.lr"});
  for (const char* line : {"warning: step 1: non-finite loss; update skipped (1 in a row)",
                           "warning: step 2: non-finite loss; update skipped (2 in a row)",
                           "warning: step 3: non-finite loss; update skipped (3 in a row)"})
    EXPECT_NE(log.str().find(line), std::string::npos) << line << "\n" << log.str();
  fs::remove_all(dir);
  fs::remove(data);
}

TEST(TrainE2E, StopRequestWritesACheckpointAndReturns) {
  std::ostringstream log;
  const std::string dir = temp_dir("stop");
  request_stop();
  const TrainSummary s =
      train(Recipe::from_string(tiny_recipe(50), "r.toml"), {.out_dir = dir}, log);
  clear_stop();
  EXPECT_TRUE(s.interrupted);
  EXPECT_LT(s.steps_done, 50);
  EXPECT_TRUE(latest_checkpoint(dir).has_value());
  // ... and the run continues from there.
  const TrainSummary r =
      train(Recipe::from_string(tiny_recipe(3), "r.toml"), {.out_dir = dir, .resume = true}, log);
  EXPECT_EQ(r.steps_done, 3);
  fs::remove_all(dir);
}

TEST(TrainE2E, SampleInspectAndEvalUseTheCheckpoint) {
  std::ostringstream log;
  const std::string dir = temp_dir("cmds"), cls = temp_dir("cls");
  train(Recipe::from_string(tiny_recipe(2), "r.toml"), {.out_dir = dir}, log);
  const std::string png = dir + "/grid.png";
  sample_command({.checkpoint = dir, .classes = {0, 2}, .per_class = 3, .steps = 3, .out = png},
                 log);
  EXPECT_TRUE(fs::exists(png));
  EXPECT_THROW(sample_command({.checkpoint = dir, .classes = {7}, .out = png}, log), Error);
  std::ostringstream inspect;
  inspect_command(dir, inspect);
  EXPECT_NE(inspect.str().find("step 2"), std::string::npos) << inspect.str();
  EXPECT_NE(inspect.str().find("blocks.0.moe.router.weight"), std::string::npos) << inspect.str();
  // A classifier on the same synthetic data, then eval with it.
  train(Recipe::from_string(
            tiny_recipe(3, "task = \"classifier\"\n") + "[optim]\nname = \"adamw\"\n", "c.toml"),
        {.out_dir = cls}, log);
  const EvalResult e = eval_command({.checkpoint = dir, .classifier = cls}, log);
  EXPECT_EQ(e.images, 12);
  EXPECT_GE(e.class_consistency, 0.0);
  EXPECT_TRUE(std::isfinite(e.frechet_distance));
  EXPECT_TRUE(fs::exists(dir + "/eval_2.json"));
  fs::remove_all(dir);
  fs::remove_all(cls);
}

TEST(TrainE2E, LatentSamplesAreWrittenAsSafetensors) {
  // 4-channel data (SD-VAE latents in the DiT recipes) cannot be a PNG grid.
  std::string text = tiny_recipe(2);
  text.replace(text.find("in_channels = 1"), 15, "in_channels = 4");
  text.replace(text.find("sample_every = 0"), 16, "sample_every = 2");
  std::ostringstream log;
  const std::string dir = temp_dir("latents");
  train(Recipe::from_string(text, "latents.toml"), {.out_dir = dir}, log);
  const SafetensorsFile grid = load_safetensors(dir + "/samples/step_0000002.safetensors");
  ASSERT_EQ(grid.tensors.size(), 2u);
  EXPECT_EQ(grid.tensors[0].second.shape(), (Shape{6, 4, 8, 8}));  // 3 classes x 2 per class
  EXPECT_EQ(grid.tensors[1].second.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1, 1, 2, 2}));
  sample_command({.checkpoint = dir, .classes = {1}, .per_class = 2, .steps = 2,
                  .out = dir + "/one.png"},
                 log);
  EXPECT_TRUE(fs::exists(dir + "/one.safetensors")) << log.str();
  EXPECT_FALSE(fs::exists(dir + "/one.png"));
  fs::remove_all(dir);
}

}  // namespace loom::trainer
