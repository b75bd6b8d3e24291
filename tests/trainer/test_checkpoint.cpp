#include "trainer/checkpoint/checkpoint.h"

#include <unistd.h>

#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "testing.h"

namespace loom::trainer {
namespace {

namespace fs = std::filesystem;

std::vector<unsigned char> bytes_of(const Tensor& t) {
  const Tensor c = t.contiguous();
  const auto* p = static_cast<const unsigned char*>(c.raw_data());
  return {p, p + c.numel() * int64_t(dtype_size(c.dtype()))};
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Every entry name under `dir` (files and directories, recursively) with its bytes, to show
// that a failed save did not touch anything.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    out[fs::relative(e.path(), dir).string()] = e.is_regular_file() ? read_all(e.path()) : "<dir>";
  return out;
}

std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

// Runs f, expecting a loom::Error whose message contains every one of `parts`.
using loom::testing::expect_error;

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("loom_checkpoint_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string run_dir() const { return (dir_ / "run").string(); }
  fs::path ckpts() const { return dir_ / "run" / "checkpoints"; }

  // Small contents whose values depend on `step`, so checkpoints are told apart.
  static CheckpointContents simple(int64_t step) {
    CheckpointContents c;
    c.step = step;
    c.recipe_toml = "[train]\nsteps = " + std::to_string(step) + "\n";
    c.model = {{"w", full({2, 2}, double(step))}};
    c.optimizer = {{"exp_avg.w", zeros({2, 2})}};
    c.counters = {{"optimizer.step", step}};
    return c;
  }

  fs::path dir_;
};

TEST_F(Checkpoint, RoundTripsEveryField) {
  Generator data_gen(0xfedcba9876543210ull, 3), noise_gen(std::numeric_limits<uint64_t>::max(), 7);
  randn({37}, data_gen);  // offsets that are not multiples of anything in particular
  randperm(11, noise_gen);

  CheckpointContents c;
  c.step = 1234;
  c.recipe_toml = "# résumé\n[model]\ndepth = 4\nname = \"dit \\\"s\\\"\"\n\n";
  c.model = {
      {"blocks.0.attn.qkv.weight", testing::uniform({3, 4}, -1, 1, 5, DType::f32)},
      {"blocks.0.attn.qkv.bias", testing::uniform({4}, -1, 1, 6, DType::bf16)},
      {"pos_embed", testing::uniform({2, 3}, -1, 1, 7, DType::f64).transpose(0, 1)},  // a view
      {"scale", scalar(0.5, DType::f16)},
      {"class_ids", from_vector<int64_t>({int64_t(1) << 50, -2, 0}, {3})},
      {"counts", from_vector<int32_t>({7, -7}, {2})},
      {"mask", from_vector<uint8_t>({1, 0, 1}, {3}, DType::boolean)},
  };
  c.ema = {{"blocks.0.attn.qkv.weight", testing::uniform({3, 4}, -1, 1, 8, DType::f32)}};
  c.optimizer = {{"exp_avg.blocks.0.attn.qkv.weight", testing::uniform({3, 4}, 0, 1, 9)},
                 {"exp_avg_sq.blocks.0.attn.qkv.weight", testing::uniform({3, 4}, 0, 1, 10)}};
  c.counters = {{"optimizer.step", 1234},
                {"data.epoch", 3},
                {"data.batch", 0},
                {"big", std::numeric_limits<int64_t>::max()},
                {"small", std::numeric_limits<int64_t>::min()}};
  c.generators = {{"data", generator_state(data_gen)}, {"noise", generator_state(noise_gen)}};
  const double tenth_sum = 0.1 + 0.2;
  c.scalars = {{"last_loss", tenth_sum},
               {"subnormal", 4.9e-324},
               {"neg_zero", -0.0},
               {"huge", 1.7976931348623157e308},
               {"nan", std::numeric_limits<double>::quiet_NaN()},
               {"inf", std::numeric_limits<double>::infinity()},
               {"ninf", -std::numeric_limits<double>::infinity()}};

  const std::string dir = save_checkpoint(run_dir(), c, 3);
  EXPECT_EQ(dir, (ckpts() / "1234").string());
  EXPECT_EQ(entries(dir),
            (std::set<std::string>{"model.safetensors", "ema.safetensors", "optimizer.safetensors",
                                   "state.json", "recipe.toml", "manifest.json"}));
  EXPECT_EQ(entries(ckpts()), std::set<std::string>{"1234"});  // no temp directory left
  EXPECT_EQ(read_all(fs::path(dir) / "recipe.toml"), c.recipe_toml);

  const CheckpointContents got = load_checkpoint(dir);
  EXPECT_EQ(got.step, 1234);
  EXPECT_EQ(got.recipe_toml, c.recipe_toml);
  const auto same_tensors = [](const auto& want, const auto& have, const char* what) {
    ASSERT_EQ(have.size(), want.size()) << what;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(have[i].first, want[i].first) << what;
      EXPECT_EQ(have[i].second.dtype(), want[i].second.dtype()) << want[i].first;
      EXPECT_EQ(have[i].second.shape(), want[i].second.shape()) << want[i].first;
      EXPECT_EQ(bytes_of(have[i].second), bytes_of(want[i].second)) << want[i].first;
    }
  };
  same_tensors(c.model, got.model, "model");
  same_tensors(c.ema, got.ema, "ema");
  same_tensors(c.optimizer, got.optimizer, "optimizer");
  EXPECT_EQ(got.counters, c.counters);
  EXPECT_EQ(got.generators, c.generators);
  ASSERT_EQ(got.scalars.size(), c.scalars.size());
  for (const auto& [name, value] : c.scalars) {
    ASSERT_TRUE(got.scalars.count(name)) << name;
    if (std::isnan(value))
      EXPECT_TRUE(std::isnan(got.scalars.at(name))) << name;
    else  // bit for bit: -0.0 and the last ulp matter for a bit-exact resume
      EXPECT_EQ(std::bit_cast<uint64_t>(got.scalars.at(name)), std::bit_cast<uint64_t>(value))
          << name << ": " << got.scalars.at(name) << " vs " << value;
  }

  // Restored generators continue the very sequence the saved ones would have drawn.
  Generator data_again = restore_generator(got.generators.at("data"));
  Generator noise_again = restore_generator(got.generators.at("noise"));
  EXPECT_EQ(bytes_of(randn({9}, data_again)), bytes_of(randn({9}, data_gen)));
  EXPECT_EQ(randperm(11, noise_again).to_vector<int64_t>(),
            randperm(11, noise_gen).to_vector<int64_t>());
}

TEST_F(Checkpoint, EmptyEmaAndMapsRoundTrip) {
  CheckpointContents c;
  c.step = 0;
  c.model = {{"w", ones({1})}};
  const CheckpointContents got = load_checkpoint(save_checkpoint(run_dir(), c, 0));
  EXPECT_EQ(got.step, 0);
  EXPECT_EQ(got.recipe_toml, "");
  EXPECT_EQ(got.model.size(), 1u);
  EXPECT_TRUE(got.ema.empty());
  EXPECT_TRUE(got.optimizer.empty());
  EXPECT_TRUE(got.counters.empty());
  EXPECT_TRUE(got.generators.empty());
  EXPECT_TRUE(got.scalars.empty());
}

TEST_F(Checkpoint, KeepLastPrunesOlderCheckpoints) {
  for (int64_t step = 1; step <= 5; ++step) save_checkpoint(run_dir(), simple(step * 100), 2);
  EXPECT_EQ(entries(ckpts()), (std::set<std::string>{"400", "500"}));
  // Numeric order, not text order: 1000 is newer than 500.
  save_checkpoint(run_dir(), simple(1000), 2);
  EXPECT_EQ(entries(ckpts()), (std::set<std::string>{"500", "1000"}));
  // keep_last <= 0 keeps everything.
  save_checkpoint(run_dir(), simple(1100), 0);
  save_checkpoint(run_dir(), simple(1200), -1);
  EXPECT_EQ(entries(ckpts()), (std::set<std::string>{"500", "1000", "1100", "1200"}));
  // The checkpoint just written survives even when it is older than the newest keep_last.
  save_checkpoint(run_dir(), simple(700), 1);
  EXPECT_EQ(entries(ckpts()), (std::set<std::string>{"700", "1200"}));
  // Directories that are not complete checkpoints are never pruned.
  fs::create_directories(ckpts() / "50");
  fs::create_directories(ckpts() / "notes");
  save_checkpoint(run_dir(), simple(1300), 1);
  EXPECT_EQ(entries(ckpts()), (std::set<std::string>{"50", "notes", "1300"}));
  EXPECT_EQ(load_checkpoint((ckpts() / "1300").string()).model[0].second.to_vector<float>(),
            std::vector<float>(4, 1300.0f));
}

TEST_F(Checkpoint, LatestIgnoresTempAndIncompleteDirectories) {
  EXPECT_FALSE(latest_checkpoint(run_dir()).has_value());  // no run dir at all
  fs::create_directories(ckpts());
  EXPECT_FALSE(latest_checkpoint(run_dir()).has_value());  // empty checkpoints/
  save_checkpoint(run_dir(), simple(10), 0);
  save_checkpoint(run_dir(), simple(20), 0);
  // A crashed save at 30 (complete files, even a manifest, but never renamed), an incomplete
  // directory at 40, a non-canonical name and a stray file.
  fs::copy(ckpts() / "20", ckpts() / ".tmp-30-4242");
  fs::create_directories(ckpts() / "40");
  write_all(ckpts() / "40" / "model.safetensors", "partial");
  fs::copy(ckpts() / "20", ckpts() / "0050");
  write_all(ckpts() / "60", "not a directory");
  ASSERT_TRUE(latest_checkpoint(run_dir()).has_value());
  EXPECT_EQ(*latest_checkpoint(run_dir()), (ckpts() / "20").string());
}

TEST_F(Checkpoint, TruncatedFileIsReportedByName) {
  const std::string dir = save_checkpoint(run_dir(), simple(7), 0);
  const fs::path model = fs::path(dir) / "model.safetensors";
  fs::resize_file(model, fs::file_size(model) - 3);
  expect_error([&] { load_checkpoint(dir); },
               {"[checkpoint] " + model.string() + ": ", "truncated"});
}

TEST_F(Checkpoint, FlippedByteIsReportedByName) {
  const std::string dir = save_checkpoint(run_dir(), simple(7), 0);
  for (const char* name : {"optimizer.safetensors", "state.json", "recipe.toml"}) {
    const fs::path file = fs::path(dir) / name;
    const std::string good = read_all(file);
    std::string bad = good;
    bad[bad.size() - 2] ^= 0x01;  // same size, different content
    write_all(file, bad);
    expect_error([&] { load_checkpoint(dir); }, {"[checkpoint] " + file.string() +
                                                 ": checksum mismatch (file corrupt or modified)"});
    write_all(file, good);
  }
  EXPECT_EQ(load_checkpoint(dir).step, 7);  // restored: loads again
}

TEST_F(Checkpoint, MissingManifestOrListedFileIsReported) {
  const std::string dir = save_checkpoint(run_dir(), simple(7), 0);
  const fs::path ema = fs::path(dir) / "ema.safetensors";
  fs::rename(ema, fs::path(dir) / "ema.bak");
  expect_error([&] { load_checkpoint(dir); }, {"[checkpoint] " + ema.string() + ": missing"});
  fs::rename(fs::path(dir) / "ema.bak", ema);

  const fs::path manifest = fs::path(dir) / "manifest.json";
  const std::string text = read_all(manifest);
  write_all(manifest, text.substr(0, text.size() / 2));
  expect_error([&] { load_checkpoint(dir); },
               {"[checkpoint] " + manifest.string() + ": ", "malformed JSON"});
  fs::remove(manifest);
  expect_error([&] { load_checkpoint(dir); }, {"[checkpoint] " + manifest.string() + ": missing"});
  expect_error([&] { load_checkpoint((ckpts() / "8").string()); },
               {"[checkpoint] " + (ckpts() / "8").string() + ": not a directory"});
}

TEST_F(Checkpoint, FailedSaveLeavesEarlierCheckpointsUntouched) {
  save_checkpoint(run_dir(), simple(5), 1);
  const auto before = snapshot(ckpts());

  // save_safetensors rejects duplicate names, after other files were already written.
  CheckpointContents bad = simple(5);
  bad.optimizer.push_back({"exp_avg.w", ones({2, 2})});
  expect_error([&] { save_checkpoint(run_dir(), bad, 1); },
               {"[checkpoint] " + (ckpts() / "5").string() + ": not saved", "duplicate"});
  EXPECT_EQ(snapshot(ckpts()), before);  // same step: the good one is not replaced

  bad.step = 6;  // a newer step: nothing appears and, with keep_last 1, nothing is pruned
  expect_error([&] { save_checkpoint(run_dir(), bad, 1); }, {"not saved", "duplicate"});
  EXPECT_EQ(snapshot(ckpts()), before);
  EXPECT_EQ(*latest_checkpoint(run_dir()), (ckpts() / "5").string());

  CheckpointContents negative = simple(5);
  negative.step = -1;
  expect_error([&] { save_checkpoint(run_dir(), negative, 1); }, {"step must be >= 0"});
  EXPECT_EQ(snapshot(ckpts()), before);
}

TEST_F(Checkpoint, SavingAStepAgainReplacesItWhole) {
  save_checkpoint(run_dir(), simple(5), 0);
  CheckpointContents again = simple(5);
  again.model = {{"other", full({3}, 9.0)}};
  again.scalars = {{"x", 1.5}};
  const std::string dir = save_checkpoint(run_dir(), again, 0);
  EXPECT_EQ(entries(ckpts()), std::set<std::string>{"5"});  // no temp or parked copies left
  const CheckpointContents got = load_checkpoint(dir);
  ASSERT_EQ(got.model.size(), 1u);
  EXPECT_EQ(got.model[0].first, "other");
  EXPECT_EQ(got.scalars.at("x"), 1.5);
}

TEST_F(Checkpoint, ResolveAcceptsCheckpointOrRunDirectory) {
  save_checkpoint(run_dir(), simple(3), 0);
  const std::string newest = save_checkpoint(run_dir(), simple(12), 0);
  const std::string older = (ckpts() / "3").string();
  EXPECT_EQ(resolve_checkpoint(older), older);
  EXPECT_EQ(resolve_checkpoint(run_dir()), newest);
  EXPECT_EQ(resolve_checkpoint(run_dir() + "/"), run_dir() + "/checkpoints/12");

  const std::string nonsense = (dir_ / "no" / "such" / "thing").string();
  expect_error([&] { resolve_checkpoint(nonsense); },
               {"[checkpoint] " + nonsense + ": does not exist"});
  write_all(dir_ / "file.txt", "hello");
  expect_error([&] { resolve_checkpoint((dir_ / "file.txt").string()); }, {"not a directory"});
  fs::create_directories(dir_ / "empty");
  expect_error([&] { resolve_checkpoint((dir_ / "empty").string()); },
               {"neither a checkpoint directory", "nor a run directory"});
  fs::create_directories(ckpts() / "99");
  expect_error([&] { resolve_checkpoint((ckpts() / "99").string()); }, {"incomplete checkpoint"});
  fs::create_directories(dir_ / "fresh" / "checkpoints");
  expect_error([&] { resolve_checkpoint((dir_ / "fresh").string()); }, {"no complete checkpoint"});
}

}  // namespace
}  // namespace loom::trainer
