// The `loom` command line. Subcommands parse their flags here and hand a plain config struct to
// the trainer; every failure a user can cause (flags, files, settings) ends with exit status 2 and
// one "loom: error: ..." line on stderr.
#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdio>
#include <exception>
#include <iostream>

#include "core/error.h"
#include "trainer/demo.h"

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive here as "errors" with exit code 0.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "loom: error: %s\n", e.what());
    std::fprintf(stderr, "Run 'loom --help' (or 'loom <command> --help') for usage.\n");
    return 2;
  }

  try {
    if (demo_cmd->parsed()) loom::trainer::run_demo(demo, std::cout);
  } catch (const loom::Error& e) {
    std::fprintf(stderr, "loom: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loom: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
