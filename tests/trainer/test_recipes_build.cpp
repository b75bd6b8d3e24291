// Every recipe in recipes/ resolves into a model the trainer can build, with the parameter counts
// of ALGORITHMS.md §1.8 / §2.4 for the named ImageNet-latent configs (counted, not allocated).
#include <cstdlib>
#include <filesystem>

#include "models/dit/dit.h"
#include "testing.h"
#include "trainer/factory.h"

namespace loom::trainer {

namespace {
std::string recipes_dir() {
  const char* root = std::getenv("LOOM_SOURCE_DIR");
  return std::string(root ? root : ".") + "/recipes/";
}
Recipe load(const std::string& name) {
  return Recipe::load(recipes_dir() + name);
}
}  // namespace

// Each file in recipes/, including any added later, parses against the schema.
TEST(RecipesBuild, EveryRecipeFileLoads) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(recipes_dir())) {
    if (entry.path().extension() != ".toml") continue;
    EXPECT_NO_THROW((void)Recipe::load(entry.path().string())) << entry.path();
    ++count;
  }
  EXPECT_GE(count, 9);
}

TEST(RecipesBuild, NamedConfigsHaveThePaperParameterCounts) {
  EXPECT_EQ(dit::count_parameters(dit_config_from_recipe(load("dit_b2.toml"))), 130315808);
  EXPECT_EQ(dit::count_parameters(dit_config_from_recipe(load("dit_xl2.toml"))), 674834720);
  EXPECT_EQ(dit::count_parameters(dit_config_from_recipe(load("dit_moe_s2_8e2a.toml"))), 199209248);
  const int64_t b2_moe =
      dit::count_parameters(dit_config_from_recipe(load("dit_moe_b2_8e2a.toml")));
  EXPECT_NEAR(double(b2_moe), 795.7e6, 0.05e6);
}

TEST(RecipesBuild, FashionMnistRecipesBuildTheirModelsAndData) {
  for (const char* name : {"fmnist_dit_moe.toml", "fmnist_dit.toml", "fmnist_dit_adamw.toml",
                           "fmnist_dit_muon.toml"}) {
    const Recipe r = load(name);
    const dit::DiTConfig cfg = dit_config_from_recipe(r);
    Generator gen(0);
    dit::DiT model(cfg, gen);
    EXPECT_EQ(model.num_parameters(), dit::count_parameters(cfg)) << name;
    EXPECT_EQ(model.num_tokens(), 49) << name;
    std::vector<Tensor> params;
    for (const auto& [pname, p] : model.named_parameters()) params.push_back(p.set_name(pname));
    const auto opt = optimizer_from_recipe(r, params);
    EXPECT_TRUE(opt != nullptr) << name;
  }
}

TEST(RecipesBuild, InconsistentModelKeysNameTheKey) {
  try {
    (void)dit_config_from_recipe(Recipe::from_string("[model]\nhidden_size = 130\n", "bad.toml"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.toml:2: model.hidden_size"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW((void)dit_config_from_recipe(
                   Recipe::from_string("[model]\nnum_experts = 2\ntop_k = 3\n", "bad.toml")),
               Error);
}

}  // namespace loom::trainer
