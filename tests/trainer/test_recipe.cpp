#include "trainer/recipe/recipe.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "testing.h"

namespace loom::trainer {
namespace {

namespace fs = std::filesystem;

// The message of the loom::Error that f throws, or a marker when it throws none.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error thrown>";
}

::testing::AssertionResult starts_with(const std::string& text, const std::string& prefix) {
  if (text.rfind(prefix, 0) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "\"" << text << "\"\n  does not start with\n\"" << prefix << "\"";
}

// CTest sets LOOM_SOURCE_DIR; a test binary run by hand falls back to this file's checkout.
fs::path source_dir() {
  const char* dir = std::getenv("LOOM_SOURCE_DIR");
  return dir && *dir ? fs::path(dir) : fs::path(__FILE__).parent_path().parent_path().parent_path();
}

class RecipeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("loom_recipe_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) const {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  // The error of loading `text` as a recipe file, with the file's path replaced by "R".
  std::string load_error(const std::string& text) const {
    const std::string path = write("bad.toml", text);
    std::string msg = error_of([&] { Recipe::load(path); });
    if (msg.rfind(path, 0) == 0) msg = "R" + msg.substr(path.size());
    return msg;
  }

  fs::path dir_;
};

TEST_F(RecipeTest, DefaultsResolveToTheMainJob) {
  const Recipe r = Recipe::from_string("", "empty.toml");
  EXPECT_EQ(r.source(), "empty.toml");
  EXPECT_EQ(r.get_string("task"), "diffusion");
  EXPECT_EQ(r.get_string("model.name"), "custom");
  EXPECT_EQ(r.get_int("model.input_size"), 28);
  EXPECT_EQ(r.get_int("model.patch_size"), 4);
  EXPECT_EQ(r.get_int("model.hidden_size"), 128);
  EXPECT_EQ(r.get_double("model.mlp_ratio"), 4.0);
  EXPECT_TRUE(r.get_bool("model.learn_sigma"));
  EXPECT_EQ(r.get_int("model.num_experts"), 4);
  EXPECT_EQ(r.get_int("model.top_k"), 2);
  EXPECT_EQ(r.get_string("diffusion.objective"), "ddpm");
  EXPECT_EQ(r.get_string("data.source"), "fashion_mnist");
  EXPECT_EQ(r.get_string("data.path"), "");
  EXPECT_EQ(r.get_int("data.limit"), -1);
  EXPECT_EQ(r.get_int("train.steps"), 800);
  EXPECT_EQ(r.get_int("train.batch_size"), 128);
  EXPECT_EQ(r.get_double("train.ema_decay"), 0.999);
  EXPECT_FALSE(r.get_bool("train.activation_checkpointing"));
  EXPECT_EQ(r.get_string("optim.name"), "muon");
  EXPECT_EQ(r.get_double("optim.lr"), 1e-3);
  EXPECT_EQ(r.get_double("optim.eps"), 1e-8);
  EXPECT_EQ(r.get_int("sample.seed"), 1234);
  EXPECT_EQ(r.get_int("eval.per_class"), 50);
  EXPECT_EQ(r.get_int("parallel.dp"), 1);
  EXPECT_EQ(r.location("train.steps"), "empty.toml:default");
}

TEST_F(RecipeTest, SchemaDeclaresEachKeyOnceWithAUsableSpec) {
  std::set<std::string> keys;
  const Recipe defaults = Recipe::from_string("", "d");
  for (const KeySpec& spec : recipe_schema()) {
    EXPECT_TRUE(keys.insert(spec.key).second) << spec.key << " declared twice";
    EXPECT_FALSE(spec.doc.empty()) << spec.key;
    if (spec.type == KeyType::integer || spec.type == KeyType::number) {
      EXPECT_TRUE(spec.min && spec.max) << spec.key << " has no range";
      const double v = spec.type == KeyType::integer ? double(defaults.get_int(spec.key))
                                                     : defaults.get_double(spec.key);
      EXPECT_GE(v, *spec.min) << spec.key;
      EXPECT_LE(v, *spec.max) << spec.key;
    }
  }
  for (const char* key : {"task", "model.aux_loss_coef", "diffusion.num_timesteps",
                          "data.synthetic_size", "train.max_nonfinite_steps", "optim.min_lr",
                          "sample.eta", "eval.classifier", "parallel.ep"})
    EXPECT_TRUE(keys.count(key)) << key;
}

TEST_F(RecipeTest, EveryRecipeFileLoadsAndRoundTrips) {
  const fs::path dir = source_dir() / "recipes";
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".toml") files.push_back(e.path());
  EXPECT_GE(files.size(), 9u) << dir;
  for (const fs::path& file : files) {
    SCOPED_TRACE(file.string());
    Recipe r = Recipe::from_string("", "x");
    ASSERT_NO_THROW(r = Recipe::load(file.string()))
        << error_of([&] { Recipe::load(file.string()); });
    EXPECT_EQ(r.source(), file.string());
    EXPECT_EQ(Recipe::from_string(r.to_toml(), "resolved").hash(), r.hash());
  }
  const auto load = [&](const char* name) { return Recipe::load((dir / name).string()); };
  EXPECT_EQ(load("fmnist_dit_moe.toml").hash(), Recipe::from_string("", "defaults").hash())
      << "fmnist_dit_moe.toml should spell out the defaults";
  EXPECT_EQ(load("fmnist_dit_muon.toml").hash(), load("fmnist_dit_moe.toml").hash())
      << "fmnist_dit_muon.toml should be the main job with its optimizer written out";
  EXPECT_EQ(load("fmnist_dit_muon.toml").get_string("optim.name"), "muon");
  EXPECT_EQ(load("fmnist_dit_adamw.toml").get_string("optim.name"), "adamw");
  EXPECT_EQ(load("fmnist_dit.toml").get_int("model.num_experts"), 0);
  const Recipe classifier = load("fmnist_classifier.toml");
  EXPECT_EQ(classifier.get_string("task"), "classifier");
  EXPECT_EQ(classifier.get_double("optim.lr"), 1e-3);
  const Recipe b2 = load("dit_b2.toml");
  EXPECT_EQ(b2.get_string("model.name"), "DiT-B/2");
  EXPECT_EQ(b2.get_int("model.input_size"), 32);
  EXPECT_EQ(b2.get_int("model.in_channels"), 4);
  EXPECT_EQ(b2.get_int("model.num_classes"), 1000);
  EXPECT_EQ(b2.get_int("train.batch_size"), 256);
  EXPECT_EQ(b2.get_double("optim.lr"), 1e-4);
  EXPECT_EQ(b2.get_double("train.ema_decay"), 0.9999);
  EXPECT_EQ(b2.get_double("train.grad_clip"), 0.0);
  EXPECT_EQ(load("dit_xl2.toml").get_string("model.name"), "DiT-XL/2");
  EXPECT_EQ(load("dit_moe_s2_8e2a.toml").get_string("model.name"), "DiT-MoE-S/2-8E2A");
  EXPECT_EQ(load("dit_moe_b2_8e2a.toml").get_string("model.name"), "DiT-MoE-B/2-8E2A");
}

TEST_F(RecipeTest, FileValuesAndTheirLines) {
  const std::string path = write("ok.toml",
                                 "# comment\n"
                                 "task = \"classifier\"\n"
                                 "model.depth = 3\n"
                                 "[train]\n"
                                 "steps = 10\n"
                                 "\n"
                                 "[optim]\n"
                                 "lr = 1      # an integer for a number key\n"
                                 "name = \"sgd\"\n"
                                 "[data]\n"
                                 "hflip = true\n"
                                 "path = \"/tmp/a \\\"b\\\"\"\n"
                                 "[parallel]\n");
  const Recipe r = Recipe::load(path);
  EXPECT_EQ(r.get_string("task"), "classifier");
  EXPECT_EQ(r.get_int("model.depth"), 3);
  EXPECT_EQ(r.get_int("train.steps"), 10);
  EXPECT_EQ(r.get_double("optim.lr"), 1.0);
  EXPECT_EQ(r.get_string("optim.name"), "sgd");
  EXPECT_TRUE(r.get_bool("data.hflip"));
  EXPECT_EQ(r.get_string("data.path"), "/tmp/a \"b\"");
  EXPECT_EQ(r.get_int("parallel.dp"), 1);
  EXPECT_EQ(r.location("task"), path + ":2");
  EXPECT_EQ(r.location("model.depth"), path + ":3");
  EXPECT_EQ(r.location("train.steps"), path + ":5");
  EXPECT_EQ(r.location("optim.lr"), path + ":8");
  EXPECT_EQ(r.location("data.path"), path + ":12");
  EXPECT_EQ(r.location("train.batch_size"), path + ":default");
}

TEST_F(RecipeTest, SyntaxErrorsNameFileAndLine) {
  EXPECT_TRUE(starts_with(load_error("[train\nsteps = 1\n"), "R:1: syntax error: "));
  const std::string msg = load_error("task = \"diffusion\"\n[train]\nsteps = = 3\n");
  EXPECT_TRUE(starts_with(msg, "R:3: syntax error: ")) << msg;
  EXPECT_NE(msg.find("(column "), std::string::npos) << msg;
  EXPECT_TRUE(starts_with(load_error("[train]\nsteps = 1\nsteps = 2\n"), "R:3: syntax error: "));
  EXPECT_TRUE(starts_with(error_of([] { Recipe::from_string("a = [", "inline"); }),
                          "inline:1: syntax error: "));
}

TEST_F(RecipeTest, UnknownKeysSuggestTheClosestAndListTheSection) {
  EXPECT_TRUE(starts_with(load_error("[train]\nsteps = 10\nstep = 5\n"),
                          "R:3: train.step: unknown key; did you mean train.steps? [train] "
                          "accepts: steps, batch_size, grad_accum, seed, log_every,"));
  EXPECT_NE(load_error("[train]\nstep = 5\n").find(", max_nonfinite_steps"), std::string::npos);
  // The right name in the wrong section.
  EXPECT_TRUE(starts_with(load_error("[train]\nlr = 0.1\n"),
                          "R:2: train.lr: unknown key; did you mean optim.lr? [train] accepts: "));
  EXPECT_TRUE(starts_with(load_error("[model]\nhiden_size = 64\n"),
                          "R:2: model.hiden_size: unknown key; did you mean model.hidden_size? "));
  EXPECT_TRUE(starts_with(load_error("lr = 0.1\n"),
                          "R:1: lr: unknown key; did you mean optim.lr? the top level accepts: "
                          "task, [model], [diffusion], [data], [train], [optim], [sample], "
                          "[eval], [parallel]"));
  EXPECT_TRUE(starts_with(load_error("tsk = \"diffusion\"\n"),
                          "R:1: tsk: unknown key; did you mean task? "));
  EXPECT_TRUE(starts_with(load_error("\n\n[trian]\nsteps = 1\n"),
                          "R:3: trian: unknown section; did you mean [train]? the top level "
                          "accepts: task, [model]"));
  // Nothing close: no guess, just the accepted keys.
  EXPECT_EQ(load_error("[parallel]\nwarp_size = 32\n"),
            "R:2: parallel.warp_size: unknown key; [parallel] accepts: dp, tp, sp, "
            "sequence_parallel, ep, bucket_mb");
  // A dotted key inside a section stays in that section.
  EXPECT_TRUE(starts_with(load_error("[data]\nhflip = true\nparallel.dp = 2\n"),
                          "R:3: data.parallel: unknown key; did you mean [parallel]? [data] "
                          "accepts: source, path, hflip, limit, prefetch, synthetic_size"));
  EXPECT_TRUE(starts_with(load_error("[train.schedule]\nx = 1\n"),
                          "R:1: train.schedule: unknown key; did you mean optim.schedule? "));
}

TEST_F(RecipeTest, WrongTypesRangesAndChoices) {
  EXPECT_EQ(load_error("[train]\nsteps = \"many\"\n"),
            "R:2: train.steps: expected integer, got string \"many\"");
  EXPECT_EQ(load_error("[train]\nsteps = 2.5\n"),
            "R:2: train.steps: expected integer, got float 2.5");
  EXPECT_EQ(load_error("[data]\nhflip = 1\n"), "R:2: data.hflip: expected boolean, got integer 1");
  EXPECT_EQ(load_error("[optim]\nlr = \"fast\"\n"),
            "R:2: optim.lr: expected number, got string \"fast\"");
  EXPECT_EQ(load_error("task = 3\n"), "R:1: task: expected string, got integer 3");
  EXPECT_EQ(load_error("[model]\nname = [\"DiT-B/2\"]\n"),
            "R:2: model.name: expected string, got array");
  EXPECT_EQ(load_error("[train.steps]\nx = 1\n"), "R:1: train.steps: expected integer, got table");
  EXPECT_EQ(load_error("train = 5\n"),
            "R:1: train: is a section: expected a table, got integer 5; [train] accepts: steps, "
            "batch_size, grad_accum, seed, log_every, sample_every, checkpoint_every, "
            "keep_checkpoints, ema_decay, grad_clip, threads, device, precision, allow_tf32, "
            "activation_checkpointing, "
            "max_nonfinite_steps");

  EXPECT_EQ(load_error("[train]\nbatch_size = 0\n"),
            "R:2: train.batch_size: must be in [1, 1048576], got 0");
  EXPECT_EQ(load_error("[model]\nclass_dropout_prob = 1.5\n"),
            "R:2: model.class_dropout_prob: must be in [0, 1], got 1.5");
  EXPECT_EQ(load_error("[model]\nmlp_ratio = 0.125\n"),
            "R:2: model.mlp_ratio: must be in [0.25, 64], got 0.125");
  EXPECT_EQ(load_error("[data]\nlimit = -2\n"),
            "R:2: data.limit: must be in [-1, 9007199254740991], got -2");
  EXPECT_EQ(load_error("[optim]\nlr = nan\n"), "R:2: optim.lr: must be a finite number, got nan");
  EXPECT_EQ(load_error("[optim]\nname = \"adam\"\n"),
            "R:2: optim.name: must be one of \"adamw\", \"sgd\", \"muon\"; got \"adam\"");
  EXPECT_EQ(load_error("[sample]\nsampler = \"DDIM\"\n"),
            "R:2: sample.sampler: must be one of \"ddpm\", \"ddim\", \"euler\"; got \"DDIM\"");
  // The bounds themselves are allowed.
  const std::string edges =
      write("edges.toml", "[model]\nclass_dropout_prob = 1\n[data]\nlimit = -1\n");
  EXPECT_EQ(Recipe::load(edges).get_double("model.class_dropout_prob"), 1.0);
}

TEST_F(RecipeTest, TheFirstProblemInTheFileIsReported) {
  // toml++ visits [data] before [train] (sorted keys); the report follows the file's order.
  EXPECT_EQ(load_error("[train]\nsteps = 0\n[data]\nhflip = 3\n"),
            "R:2: train.steps: must be in [1, 9007199254740991], got 0");
  EXPECT_EQ(load_error("[train]\nsteps = 1\n[data]\nhflip = 3\n"),
            "R:4: data.hflip: expected boolean, got integer 3");
}

TEST_F(RecipeTest, MissingFile) {
  const std::string path = (dir_ / "absent.toml").string();
  const std::string msg = error_of([&] { Recipe::load(path); });
  EXPECT_TRUE(starts_with(msg, path + ": cannot open recipe: ")) << msg;
}

TEST_F(RecipeTest, OverridesApplyAfterTheFile) {
  const std::string path = write("base.toml", "[train]\nsteps = 10\nseed = 3\n");
  const Recipe r = Recipe::load(
      path, {"train.steps=42", "optim.lr=1e-3", "optim.weight_decay=2", "model.name=DiT-B/2",
             "eval.classifier=\"runs/c x/ckpt\"", "data.path=", "data.hflip=true",
             " train.log_every = 7 ", "train.seed=5", "train.seed=6", "task=classifier",
             "data.synthetic_size=1_000", "sample.cfg_scale=+1.5", "model.depth=0x10"});
  EXPECT_EQ(r.get_int("train.steps"), 42);
  EXPECT_EQ(r.get_double("optim.lr"), 1e-3);
  EXPECT_EQ(r.get_double("optim.weight_decay"), 2.0);
  EXPECT_EQ(r.get_string("model.name"), "DiT-B/2");
  EXPECT_EQ(r.get_string("eval.classifier"), "runs/c x/ckpt");
  EXPECT_EQ(r.get_string("data.path"), "");
  EXPECT_TRUE(r.get_bool("data.hflip"));
  EXPECT_EQ(r.get_int("train.log_every"), 7);
  EXPECT_EQ(r.get_int("train.seed"), 6);
  EXPECT_EQ(r.get_string("task"), "classifier");
  EXPECT_EQ(r.get_int("data.synthetic_size"), 1000);
  EXPECT_EQ(r.get_double("sample.cfg_scale"), 1.5);
  EXPECT_EQ(r.get_int("model.depth"), 16);
  EXPECT_EQ(r.location("train.steps"), "--set train.steps=42");
  EXPECT_EQ(r.location("train.seed"), "--set train.seed=6");
  EXPECT_EQ(r.location("train.batch_size"), path + ":default");
  // A string key takes a non-string TOML value verbatim.
  EXPECT_EQ(Recipe::from_string("", "x", {"data.path=123"}).get_string("data.path"), "123");
  EXPECT_EQ(Recipe::from_string("", "x", {"model.name=a=b"}).get_string("model.name"), "a=b");
}

TEST_F(RecipeTest, BadOverridesNameTheOverride) {
  const auto err = [](const std::string& set) {
    return error_of([&] { Recipe::from_string("", "x.toml", {set}); });
  };
  EXPECT_TRUE(starts_with(err("train.step=5"),
                          "--set train.step=5: train.step: unknown key; did "
                          "you mean train.steps? [train] accepts: steps,"));
  EXPECT_EQ(err("parallel.pp=2"),
            "--set parallel.pp=2: parallel.pp: unknown key; did you mean parallel.dp? "
            "[parallel] accepts: dp, tp, sp, sequence_parallel, ep, bucket_mb");
  EXPECT_EQ(err("train.steps=abc"),
            "--set train.steps=abc: train.steps: expected integer, got 'abc'");
  EXPECT_EQ(err("train.steps=\"5\""),
            "--set train.steps=\"5\": train.steps: expected integer, got string \"5\"");
  EXPECT_EQ(err("train.steps=1.0"),
            "--set train.steps=1.0: train.steps: expected integer, got float 1.0");
  EXPECT_EQ(err("train.batch_size=0"),
            "--set train.batch_size=0: train.batch_size: must be in [1, 1048576], got 0");
  EXPECT_EQ(err("data.hflip=yes"), "--set data.hflip=yes: data.hflip: expected boolean, got 'yes'");
  EXPECT_EQ(err("optim.name=adam"),
            "--set optim.name=adam: optim.name: must be one of \"adamw\", \"sgd\", \"muon\"; got "
            "\"adam\"");
  EXPECT_EQ(err("train.steps"), "--set train.steps: expected key=value");
  EXPECT_EQ(err("=5"), "--set =5: expected key=value");
  EXPECT_TRUE(starts_with(err("train=5"),
                          "--set train=5: train: is a section, not a key; [train] "
                          "accepts: steps,"));
  EXPECT_EQ(
      err("train.steps=5\nlog_every=1"),
      "--set train.steps=5\nlog_every=1: train.steps: expected integer, got '5\nlog_every=1'");
  EXPECT_EQ(err("data.path=\xff\xfe"),
            "--set data.path=\xff\xfe: data.path: not a valid string (TOML wants UTF-8 text)");
  // The file is checked before the overrides.
  EXPECT_TRUE(starts_with(
      error_of([] { Recipe::from_string("[train]\nsteps = 0\n", "f.toml", {"train.steps=5"}); }),
      "f.toml:2: train.steps: must be in"));
}

TEST_F(RecipeTest, CheckLocatesTheKey) {
  const std::string path = write("c.toml", "\n[optim]\nwarmup_steps = 5000\n");
  const Recipe r = Recipe::load(path, {"train.steps=100"});
  EXPECT_NO_THROW(r.check(true, "optim.warmup_steps", "unused"));
  EXPECT_EQ(error_of([&] { r.check(false, "optim.warmup_steps", "must be <= train.steps (100)"); }),
            path + ":3: optim.warmup_steps: must be <= train.steps (100)");
  EXPECT_EQ(error_of([&] { r.check(false, "train.steps", "too few"); }),
            "--set train.steps=100: train.steps: too few");
  EXPECT_EQ(error_of([&] { r.check(false, "model.top_k", "must be <= model.num_experts"); }),
            path + ":default: model.top_k: must be <= model.num_experts");
  EXPECT_NE(error_of([&] { r.check(false, "model.topk", "x"); }).find("model.topk"),
            std::string::npos);
}

TEST_F(RecipeTest, GettersRejectMisuse) {
  const Recipe r = Recipe::from_string("", "x");
  EXPECT_NE(error_of([&] { r.get_int("optim.lr"); }).find("optim.lr"), std::string::npos);
  EXPECT_NE(error_of([&] { r.get_double("train.steps"); }).find("train.steps"), std::string::npos);
  EXPECT_NE(error_of([&] { r.get_bool("task"); }).find("task"), std::string::npos);
  EXPECT_NE(error_of([&] { r.get_string("data.hflip"); }).find("data.hflip"), std::string::npos);
  EXPECT_NE(error_of([&] { r.get_int("train.nope"); }).find("train.nope"), std::string::npos);
}

// A valid value different from the default, for every key type.
std::string other_value(const KeySpec& spec, const Recipe& defaults) {
  std::ostringstream os;
  os.precision(17);
  switch (spec.type) {
    case KeyType::integer: {
      const int64_t d = defaults.get_int(spec.key);
      os << (double(d) < *spec.max ? d + 1 : d - 1);
      break;
    }
    case KeyType::number: {
      const double d = defaults.get_double(spec.key);
      os << std::showpoint << (d < *spec.max ? (d + *spec.max) / 2 : (d + *spec.min) / 2);
      break;
    }
    case KeyType::boolean:
      os << (defaults.get_bool(spec.key) ? "false" : "true");
      break;
    case KeyType::string: {
      const std::string d = defaults.get_string(spec.key);
      if (spec.choices.empty()) return spec.key + "=" + d + "x";
      os << (spec.choices[0] == d ? spec.choices[1] : spec.choices[0]);
      break;
    }
  }
  return spec.key + "=" + os.str();
}

TEST_F(RecipeTest, HashSeesEveryValueButNotWhereItCameFrom) {
  const Recipe defaults = Recipe::from_string("", "a");
  EXPECT_EQ(defaults.hash(), Recipe::from_string("# nothing\n", "b").hash());
  EXPECT_EQ(Recipe::from_string("[train]\nsteps = 7\n", "a").hash(),
            Recipe::from_string("train.steps = 7", "b").hash());
  EXPECT_EQ(Recipe::from_string("[train]\nsteps = 7\n", "a").hash(),
            Recipe::from_string("", "c", {"train.steps=7"}).hash());
  EXPECT_EQ(Recipe::from_string("[optim]\nlr = 1\n", "a").hash(),
            Recipe::from_string("[optim]\nlr = 1.0\n", "a").hash());
  std::set<uint64_t> hashes = {defaults.hash()};
  for (const KeySpec& spec : recipe_schema()) {
    const std::string set = other_value(spec, defaults);
    SCOPED_TRACE(set);
    Recipe changed = defaults;
    ASSERT_NO_THROW(changed = Recipe::from_string("", "a", {set}))
        << error_of([&] { Recipe::from_string("", "a", {set}); });
    EXPECT_TRUE(hashes.insert(changed.hash()).second) << "hash did not change";
  }
}

TEST_F(RecipeTest, ToTomlRoundTripsEveryValue) {
  const Recipe r = Recipe::from_string(
      "[optim]\nlr = 0.1\neps = 1e-300\nweight_decay = 1.2345678901234567\n", "src\nwith newline",
      {"data.path=\"tab\\there \\\"q\\\" back\\\\slash \\u00e9 \\u0001\"", "model.name=x#y",
       "data.limit=123456789012", "train.seed=9007199254740991", "optim.min_lr=0.0",
       "sample.cfg_scale=7.25", "data.hflip=true"});
  EXPECT_EQ(r.get_string("data.path"), "tab\there \"q\" back\\slash \xc3\xa9 \x01");
  const std::string text = r.to_toml();
  const Recipe back = Recipe::from_string(text, "resolved.toml");
  EXPECT_EQ(back.hash(), r.hash()) << text;
  for (const KeySpec& spec : recipe_schema()) {
    SCOPED_TRACE(spec.key);
    switch (spec.type) {
      case KeyType::integer:
        EXPECT_EQ(back.get_int(spec.key), r.get_int(spec.key));
        break;
      case KeyType::number:
        EXPECT_EQ(back.get_double(spec.key), r.get_double(spec.key));
        break;
      case KeyType::boolean:
        EXPECT_EQ(back.get_bool(spec.key), r.get_bool(spec.key));
        break;
      case KeyType::string:
        EXPECT_EQ(back.get_string(spec.key), r.get_string(spec.key));
        break;
    }
    // Every key is written where the file says it was set, with its doc above it.
    EXPECT_NE(back.location(spec.key), "resolved.toml:default");
    const std::string leaf = spec.key.substr(spec.key.find('.') + 1);
    EXPECT_NE(text.find("\n" + leaf + " = "), std::string::npos);
    EXPECT_NE(text.find(spec.doc.substr(0, 20)), std::string::npos);
  }
  EXPECT_EQ(back.get_double("optim.eps"), 1e-300);
  EXPECT_EQ(back.get_double("optim.weight_decay"), 1.2345678901234567);
  EXPECT_EQ(back.get_double("optim.lr"), 0.1);
  EXPECT_EQ(back.to_toml().substr(back.to_toml().find("\ntask")), text.substr(text.find("\ntask")));
}

TEST_F(RecipeTest, ReferenceDocIsCurrent) {
  const fs::path doc = source_dir() / "docs" / "RECIPES.md";
  const std::string expected = recipe_reference_markdown();
  const char* update = std::getenv("LOOM_UPDATE_DOCS");
  if (update && std::string(update) == "1") std::ofstream(doc, std::ios::binary) << expected;
  std::ifstream in(doc, std::ios::binary);
  ASSERT_TRUE(in) << doc << " is missing; regenerate with LOOM_UPDATE_DOCS=1";
  std::stringstream actual;
  actual << in.rdbuf();
  EXPECT_TRUE(actual.str() == expected)
      << doc << " is stale: regenerate it with LOOM_UPDATE_DOCS=1 ctest -R trainer/test_recipe";
  for (const KeySpec& spec : recipe_schema())
    EXPECT_NE(expected.find("| `" + spec.key.substr(spec.key.find('.') + 1) + "` |"),
              std::string::npos)
        << spec.key;
}

}  // namespace
}  // namespace loom::trainer
