// The `loom` command line. Subcommands parse their flags here and hand a plain config struct to
// the trainer; every failure a user can cause (flags, files, settings) ends with exit status 2 and
// one "loom: error: ..." line on stderr.
#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdio>
#include <exception>
#include <iostream>

#include "core/error.h"
#include "parallel/communicator.h"
#include "trainer/commands.h"
#include "trainer/demo.h"
#include "trainer/recipe/recipe.h"
#include "trainer/train.h"

// LOOM_VERSION comes from CMake (the project version).

namespace {

// CLI11's PositiveNumber prints the whole double range in its message and its conversion
// saturates out-of-range integers silently; std::from_chars reports both cases.
template <class T>
CLI::Validator positive(const char* what) {
  return CLI::Validator(
      [what](std::string& text) -> std::string {
        T value{};
        const char* end = text.data() + text.size();
        const auto [ptr, ec] = std::from_chars(text.data(), end, value);
        if (ec == std::errc() && ptr == end && value > 0) return {};
        if (ec == std::errc::result_out_of_range)
          return std::string("'") + text + "' is out of range";
        return std::string("expected a positive ") + what + ", got '" + text + "'";
      },
      "POSITIVE");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"loom: a C++ training framework for diffusion transformers", "loom"};
  app.set_version_flag("--version", "loom " LOOM_VERSION);
  app.require_subcommand(1);

  loom::trainer::DemoConfig demo;
  CLI::App* demo_cmd = app.add_subcommand(
      "demo", "Train a 2-layer MLP on Fashion-MNIST and report the test accuracy");
  demo_cmd->add_option("--steps", demo.steps, "Training steps")
      ->check(positive<int64_t>("integer"))
      ->capture_default_str();
  demo_cmd->add_option("--batch", demo.batch, "Images per step")
      ->check(positive<int64_t>("integer"))
      ->capture_default_str();
  demo_cmd->add_option("--lr", demo.lr, "AdamW learning rate")
      ->check(positive<double>("number"))
      ->capture_default_str();
  demo_cmd->add_option("--threads", demo.threads, "CPU threads (default: LOOM_NUM_THREADS or all)")
      ->check(positive<int>("integer"));
  demo_cmd->add_option("--data", demo.data_dir,
                       "Folder with the Fashion-MNIST IDX files (default: LOOM_FASHION_MNIST_DIR "
                       "or /usr/share/datasets/fashion-mnist)");
  demo_cmd->add_option("--seed", demo.seed, "Seed of the weights and the data order")
      ->capture_default_str();

  std::string recipe_path;
  std::vector<std::string> overrides;
  loom::trainer::TrainOptions train_opts;
  CLI::App* train_cmd = app.add_subcommand("train",
                                           "Train from a recipe (a run directory holds "
                                           "metrics, samples and checkpoints)");
  train_cmd->add_option("recipe", recipe_path, "Recipe file (.toml)")->required();
  train_cmd->add_option("--set", overrides, "Override a recipe key: --set train.steps=100");
  train_cmd->add_option("--out", train_opts.out_dir, "Run directory (default: runs/<recipe name>)");
  train_cmd->add_flag("--resume", train_opts.resume,
                      "Continue the run in --out from its newest checkpoint");

  loom::trainer::SampleOptions sample;
  int64_t sample_steps = 0;
  double sample_cfg = 0;
  CLI::App* sample_cmd =
      app.add_subcommand("sample", "Generate a grid of images from a checkpoint");
  sample_cmd->add_option("checkpoint", sample.checkpoint, "Checkpoint or run directory")
      ->required();
  sample_cmd->add_option("--class", sample.classes, "Class ids, one row each (default: all)");
  sample_cmd->add_option("--per-class", sample.per_class, "Images per class")
      ->check(positive<int64_t>("integer"))
      ->capture_default_str();
  auto* sample_cfg_opt =
      sample_cmd->add_option("--cfg", sample_cfg, "Guidance scale (default: recipe)");
  auto* sample_steps_opt =
      sample_cmd->add_option("--steps", sample_steps, "Sampling steps (default: recipe)")
          ->check(positive<int64_t>("integer"));
  sample_cmd->add_option("--sampler", sample.sampler, "ddpm, ddim or euler (default: recipe)")
      ->check(CLI::IsMember({"ddpm", "ddim", "euler"}));
  sample_cmd->add_option("--seed", sample.seed, "Noise seed")->capture_default_str();
  bool no_ema = false;
  sample_cmd->add_flag("--no-ema", no_ema, "Use the trained weights instead of their EMA");
  sample_cmd->add_option("--out", sample.out, "Output PNG (for latent models: the same name as .safetensors)")->capture_default_str();

  loom::trainer::EvalOptions eval;
  int64_t eval_per_class = 0, eval_steps = 0;
  double eval_cfg = 0;
  CLI::App* eval_cmd = app.add_subcommand(
      "eval", "Class consistency and Frechet distance of generated images (classifier features)");
  eval_cmd->add_option("checkpoint", eval.checkpoint, "Checkpoint or run directory")->required();
  eval_cmd->add_option(
      "--classifier", eval.classifier,
      "Classifier checkpoint or run (default: recipe, else runs/fmnist_classifier)");
  auto* eval_pc_opt =
      eval_cmd->add_option("--per-class", eval_per_class, "Images per class (default: recipe)")
          ->check(positive<int64_t>("integer"));
  auto* eval_steps_opt =
      eval_cmd->add_option("--steps", eval_steps, "Sampling steps (default: recipe)")
          ->check(positive<int64_t>("integer"));
  auto* eval_cfg_opt = eval_cmd->add_option("--cfg", eval_cfg, "Guidance scale (default: recipe)");
  eval_cmd->add_option("--seed", eval.seed, "Noise seed")->capture_default_str();

  std::string inspect_path;
  CLI::App* inspect_cmd =
      app.add_subcommand("inspect", "Print a checkpoint's step, recipe and tensors");
  inspect_cmd->add_option("checkpoint", inspect_path, "Checkpoint or run directory")->required();

  bool recipe_doc = false;
  std::string recipe_check;
  CLI::App* recipe_cmd = app.add_subcommand("recipe", "Recipe reference and validation");
  recipe_cmd->add_flag("--doc", recipe_doc, "Print the reference of every recipe key (Markdown)");
  recipe_cmd->add_option("--check", recipe_check, "Validate a recipe and print it resolved");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive here as "errors" with exit code 0.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "loom: error: %s\n", e.what());
    std::fprintf(stderr, "Run 'loom --help' (or 'loom <command> --help') for usage.\n");
    return 2;
  }

  // Under mpirun a failing rank must take the others down instead of leaving them in a collective.
  bool multi_rank = false;
  try {
    multi_rank = loom::parallel::launched_world_size() > 1;
  } catch (const loom::Error& e) {
    std::fprintf(stderr, "loom: error: %s\n", e.what());
    return 2;
  }
  try {
    namespace tr = loom::trainer;
    if (demo_cmd->parsed()) tr::run_demo(demo, std::cout);
    if (train_cmd->parsed()) {
      const auto recipe = tr::Recipe::load(recipe_path, overrides);
      tr::train(recipe, train_opts, std::cout);
    }
    if (sample_cmd->parsed()) {
      if (*sample_cfg_opt) sample.cfg_scale = sample_cfg;
      if (*sample_steps_opt) sample.steps = sample_steps;
      sample.use_ema = !no_ema;
      tr::sample_command(sample, std::cout);
    }
    if (eval_cmd->parsed()) {
      if (*eval_pc_opt) eval.per_class = eval_per_class;
      if (*eval_steps_opt) eval.steps = eval_steps;
      if (*eval_cfg_opt) eval.cfg_scale = eval_cfg;
      tr::eval_command(eval, std::cout);
    }
    if (inspect_cmd->parsed()) tr::inspect_command(inspect_path, std::cout);
    if (recipe_cmd->parsed()) {
      if (recipe_doc) std::cout << tr::recipe_reference_markdown();
      if (!recipe_check.empty()) std::cout << tr::Recipe::load(recipe_check).to_toml();
      if (!recipe_doc && recipe_check.empty()) std::cout << recipe_cmd->help();
    }
  } catch (const loom::Error& e) {
    if (multi_rank) loom::parallel::abort_all(std::string("error: ") + e.what(), 2);
    std::fprintf(stderr, "loom: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    if (multi_rank) loom::parallel::abort_all(std::string("internal error: ") + e.what(), 1);
    std::fprintf(stderr, "loom: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
