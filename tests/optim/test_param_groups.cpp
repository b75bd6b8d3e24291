// Parameter groups: the name patterns, assignment and its errors, MultiOptimizer against the
// group optimizers run on their own, the schedule scaling, the table, and the default DiT
// grouping that optim.name = "muon" builds from a recipe.
#include <algorithm>
#include <map>
#include <sstream>

#include "models/dit/dit.h"
#include "optim/adamw.h"
#include "optim/muon.h"
#include "optim/param_groups.h"
#include "optim/sgd.h"
#include "testing.h"
#include "trainer/factory.h"
#include "trainer/recipe/recipe.h"

namespace loom::optim {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(GlobMatch, StarMatchesAnyRunIncludingDots) {
  EXPECT_TRUE(glob_match("blocks.*.attn.qkv.weight", "blocks.0.attn.qkv.weight"));
  EXPECT_TRUE(glob_match("blocks.*.attn.qkv.weight", "blocks.12.attn.qkv.weight"));
  EXPECT_TRUE(glob_match("blocks.*.weight", "blocks.3.moe.shared.up_proj.weight"));
  EXPECT_TRUE(glob_match("*", "anything.at.all"));
  EXPECT_TRUE(glob_match("*.bias", "final_layer.linear.bias"));
  EXPECT_TRUE(glob_match("a*b*c", "a.x.b.y.b.c"));
  EXPECT_TRUE(glob_match("exact.name", "exact.name"));
  EXPECT_TRUE(glob_match("x**", "x"));
  // Whole-name matches only, and every non-'*' character is literal.
  EXPECT_FALSE(glob_match("blocks.*.attn.qkv.weight", "blocks.0.attn.qkv.bias"));
  EXPECT_FALSE(glob_match("attn.qkv.weight", "blocks.0.attn.qkv.weight"));
  EXPECT_FALSE(glob_match("blocks.*", "x_blocks.0"));
  EXPECT_FALSE(glob_match("a*b*c", "a.x.b.y.c.d"));
  EXPECT_FALSE(glob_match("blocks.?.w", "blocks.0.w"));
  EXPECT_FALSE(glob_match("", "a"));
  EXPECT_TRUE(glob_match("", ""));
}

TEST(SplitPatterns, TrimsAndDropsEmptyItems) {
  EXPECT_EQ(split_patterns(" a.*.b ,c,, d "), (std::vector<std::string>{"a.*.b", "c", "d"}));
  EXPECT_EQ(split_patterns(""), std::vector<std::string>{});
  EXPECT_EQ(split_patterns(" , "), std::vector<std::string>{});
}

TEST(AssignParamGroups, PatternsFirstThenTheCatchAll) {
  const std::vector<std::string> names = {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
                                          "x_embedder.proj.weight", "blocks.1.mlp.fc1.weight"};
  const std::vector<ParamGroupSpec> groups = {{.name = "rest"},
                                              {.name = "hidden", .patterns = {"blocks.*.weight"}}};
  const auto members = assign_param_groups(groups, names);
  EXPECT_EQ(members[0], (std::vector<size_t>{1, 2}));
  EXPECT_EQ(members[1], (std::vector<size_t>{0, 3}));
}

TEST(AssignParamGroups, ErrorsNameTheParametersAndGroups) {
  const std::vector<std::string> names = {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
                                          "final_layer.linear.weight"};
  // Matched twice.
  std::string e = error_of([&] {
    assign_param_groups({{.name = "a", .patterns = {"blocks.*"}},
                         {.name = "b", .patterns = {"*.weight"}},
                         {.name = "c"}},
                        names);
  });
  EXPECT_TRUE(contains(e, "more than one group: 'blocks.0.attn.qkv.weight' (groups 'a', 'b')"))
      << e;
  EXPECT_FALSE(contains(e, "qkv.bias")) << e;
  // Matched by nothing, no catch-all.
  e = error_of([&] { assign_param_groups({{.name = "a", .patterns = {"blocks.*"}}}, names); });
  EXPECT_TRUE(contains(e, "matched by no group: 'final_layer.linear.weight'")) << e;
  // A group whose patterns match nothing (a typo) would silently empty it.
  e = error_of([&] {
    assign_param_groups({{.name = "muon", .patterns = {"blocks.*.atn.qkv.weight"}}, {.name = "r"}},
                        names);
  });
  EXPECT_TRUE(contains(e, "group 'muon' (patterns blocks.*.atn.qkv.weight) matches no parameter"))
      << e;
  // Two catch-alls, repeated group names, unnamed or repeated parameters.
  e = error_of([&] { assign_param_groups({{.name = "a"}, {.name = "b"}}, names); });
  EXPECT_TRUE(contains(e, "'a' and 'b' both have no patterns")) << e;
  e = error_of([&] {
    assign_param_groups({{.name = "a"}, {.name = "a", .patterns = {"*"}}}, names);
  });
  EXPECT_TRUE(contains(e, "two groups are named 'a'")) << e;
  e = error_of([&] { assign_param_groups({{.name = "a"}}, {"x", ""}); });
  EXPECT_TRUE(contains(e, "parameter #1 has no name")) << e;
  e = error_of([&] { assign_param_groups({{.name = "a"}}, {"x", "y", "x"}); });
  EXPECT_TRUE(contains(e, "#0 and #2 are both named 'x'")) << e;
  EXPECT_THROW(assign_param_groups({}, names), Error);
}

Tensor named(const Shape& shape, const std::string& name, uint64_t seed) {
  Tensor t = testing::uniform(shape, -1, 1, seed, DType::f32);
  t.set_name(name).set_requires_grad();
  return t;
}

std::vector<Tensor> clones(const std::vector<Tensor>& ps) {
  std::vector<Tensor> out;
  for (const Tensor& p : ps) {
    Tensor c = p.detach().clone();
    c.set_name(p.name()).set_requires_grad();
    out.push_back(c);
  }
  return out;
}

TEST(MultiOptimizer, MatchesEachGroupsOptimizerRunAloneUnderAScheduleFactor) {
  const std::vector<Tensor> ps = {
      named({8, 4}, "blocks.0.attn.qkv.weight", 1), named({8}, "blocks.0.attn.qkv.bias", 2),
      named({4, 8}, "blocks.0.attn.proj.weight", 3), named({3, 4}, "head.weight", 4)};
  const double base = 1e-3, muon_lr = 0.02, adam_lr = 5e-4, sgd_lr = 0.1;
  MultiOptimizer multi(
      ps,
      {{.name = "muon",
        .patterns = {"blocks.*.weight"},
        .optimizer = "muon",
        .lr = muon_lr,
        .weight_decay = 0.1},
       {.name = "sgd", .patterns = {"head.*"}, .optimizer = "sgd", .lr = sgd_lr, .momentum = 0.9},
       {.name = "rest", .optimizer = "adamw", .lr = adam_lr, .beta2 = 0.95}},
      base);
  ASSERT_EQ(multi.num_groups(), 3u);
  EXPECT_EQ(multi.group_indices(0), (std::vector<size_t>{0, 2}));
  EXPECT_EQ(multi.group_indices(1), (std::vector<size_t>{3}));
  EXPECT_EQ(multi.group_indices(2), (std::vector<size_t>{1}));
  EXPECT_EQ(multi.params().size(), 4u);

  const std::vector<Tensor> solo = clones(ps);
  Muon muon({solo[0], solo[2]}, {.lr = muon_lr, .weight_decay = 0.1});
  Sgd sgd({solo[3]}, {.lr = sgd_lr, .momentum = 0.9, .nesterov = true});
  AdamW adam({solo[1]}, {.lr = adam_lr, .beta2 = 0.95, .weight_decay = 0});
  const std::vector<double> factors = {0.25, 1.0, 0.5};
  for (size_t s = 0; s < factors.size(); ++s) {
    multi.set_lr(base * factors[s]);
    EXPECT_DOUBLE_EQ(multi.group_lr(0), muon_lr * factors[s]);
    EXPECT_DOUBLE_EQ(multi.group_lr(2), adam_lr * factors[s]);
    muon.set_lr(muon_lr * factors[s]);
    sgd.set_lr(sgd_lr * factors[s]);
    adam.set_lr(adam_lr * factors[s]);
    for (size_t i = 0; i < ps.size(); ++i) {
      const Tensor g = testing::uniform(ps[i].shape(), -1, 1, 100 + s * 10 + i, DType::f32);
      ps[i].set_grad(g.clone());
      solo[i].set_grad(g.clone());
    }
    multi.step();
    muon.step();
    sgd.step();
    adam.step();
    for (size_t i = 0; i < ps.size(); ++i)
      EXPECT_EQ(ps[i].to_vector<float>(), solo[i].to_vector<float>()) << ps[i].name() << " " << s;
    EXPECT_DOUBLE_EQ(multi.group_optimizer(0).lr(), muon_lr * factors[s]);
  }
  multi.zero_grad();
  for (const Tensor& p : ps)
    EXPECT_EQ(p.grad().to_vector<float>(), std::vector<float>(size_t(p.numel()), 0.0f));
}

TEST(MultiOptimizer, ErrorsNameTheGroup) {
  const std::vector<Tensor> ps = {named({8, 4}, "blocks.0.w", 1), named({8}, "blocks.0.b", 2)};
  std::string e = error_of([&] {
    MultiOptimizer(ps, {{.name = "hidden", .patterns = {"blocks.*"}, .optimizer = "muon"}}, 1e-3);
  });
  EXPECT_TRUE(contains(e, "group 'hidden': [muon] parameter 'blocks.0.b' has shape [8]")) << e;
  e = error_of([&] { MultiOptimizer(ps, {{.name = "all", .optimizer = "lion"}}, 1e-3); });
  EXPECT_TRUE(contains(e, "group 'all': unknown optimizer 'lion'")) << e;
  EXPECT_THROW(MultiOptimizer(ps, {{.name = "all"}}, 0.0), Error);
  EXPECT_THROW(MultiOptimizer({named({2}, "", 3)}, {{.name = "all"}}, 1e-3), Error);
}

TEST(MultiOptimizer, DescribeGroupsListsEveryGroup) {
  const std::vector<Tensor> ps = {named({8, 4}, "blocks.0.attn.qkv.weight", 1),
                                  named({8}, "blocks.0.attn.qkv.bias", 2),
                                  named({2, 8, 4}, "blocks.0.moe.experts.w_up", 3)};
  MultiOptimizer multi(ps,
                       {{.name = "muon",
                         .patterns = {"*.weight", "*.experts.*"},
                         .optimizer = "muon",
                         .lr = 0.02,
                         .muon_scale = MuonScale::moonlight},
                        {.name = "adamw", .lr = 3e-4, .weight_decay = 0.05}},
                       3e-4);
  multi.set_lr(1.5e-4);  // the table shows the rates the next step uses
  const std::string table = describe_groups(multi);
  std::map<std::string, std::string> row;
  std::istringstream lines(table);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string first;
    words >> first;
    row[first] = line;
  }
  ASSERT_TRUE(row.count("group") && row.count("muon") && row.count("adamw")) << table;
  EXPECT_TRUE(contains(row["muon"], "muon (moonlight)")) << table;
  EXPECT_TRUE(contains(row["muon"], " 0.01 ")) << table;
  EXPECT_TRUE(contains(row["muon"], " 2 ")) << table;   // two parameters
  EXPECT_TRUE(contains(row["muon"], " 96 ")) << table;  // 32 + 64 elements
  EXPECT_TRUE(contains(row["muon"], "blocks.0.attn.qkv.weight [8, 4]")) << table;
  EXPECT_TRUE(contains(row["muon"], "blocks.0.moe.experts.w_up [2, 8, 4]")) << table;
  EXPECT_TRUE(contains(row["adamw"], " 0.00015 ")) << table;
  EXPECT_TRUE(contains(row["adamw"], " 0.05 ")) << table;
  EXPECT_TRUE(contains(row["adamw"], "blocks.0.attn.qkv.bias [8]")) << table;
  // Columns line up: every row has its examples column at the same offset.
  EXPECT_EQ(row["muon"].find("blocks."), row["adamw"].find("blocks."));
}

// The DiT-MoE of the main recipe, shrunk, with its parameters named as the trainer names them.
std::vector<Tensor> dit_params(int64_t num_experts) {
  dit::DiTConfig cfg;
  cfg.input_size = 8;
  cfg.patch_size = 4;
  cfg.in_channels = 1;
  cfg.hidden_size = 16;
  cfg.depth = 2;
  cfg.num_heads = 2;
  cfg.num_classes = 3;
  cfg.num_experts = num_experts;
  cfg.top_k = 1;
  cfg.num_shared_experts = 1;
  Generator gen(0, 1);
  dit::DiT model(cfg, gen);
  std::vector<Tensor> ps;
  for (const auto& [name, p] : model.named_parameters()) {
    p.set_name(name);
    ps.push_back(p);
  }
  return ps;
}

TEST(DefaultDitGrouping, HiddenMatricesGetMuonEverythingElseAdamW) {
  for (const int64_t experts : {int64_t(2), int64_t(0)}) {
    SCOPED_TRACE(experts ? "DiT-MoE" : "dense DiT");
    const std::vector<Tensor> ps = dit_params(experts);
    const trainer::Recipe r = trainer::Recipe::from_string(
        "", "defaults", {"optim.name=muon", "optim.lr=3e-4", "optim.adamw_lr=-1"});
    const auto opt = trainer::optimizer_from_recipe(r, ps);
    const auto* multi = dynamic_cast<const MultiOptimizer*>(opt.get());
    ASSERT_NE(multi, nullptr);
    ASSERT_EQ(multi->num_groups(), 2u);
    EXPECT_EQ(multi->group(0).optimizer, "muon");
    EXPECT_EQ(multi->group(0).lr, 0.02);
    EXPECT_EQ(multi->group(1).optimizer, "adamw");
    EXPECT_EQ(multi->group(1).lr, 3e-4);  // adamw_lr = -1: optim.lr
    std::map<std::string, std::string> group_of;
    for (size_t g = 0; g < 2; ++g)
      for (size_t i : multi->group_indices(g)) group_of[ps[i].name()] = multi->group(g).name;
    ASSERT_EQ(group_of.size(), ps.size());
    for (const auto& [name, group] : group_of) {
      const bool hidden_matrix =
          name.starts_with("blocks.") && !name.ends_with(".bias") && !contains(name, "router");
      EXPECT_EQ(group, hidden_matrix ? "muon" : "adamw") << name;
    }
    std::vector<std::string> expected_muon = {"blocks.0.attn.qkv.weight",
                                              "blocks.1.attn.proj.weight",
                                              "blocks.0.adaLN_modulation.1.weight"};
    if (experts) {
      for (const char* n : {"blocks.0.moe.experts.w_gate", "blocks.1.moe.experts.w_down",
                            "blocks.0.moe.shared.up_proj.weight"})
        expected_muon.push_back(n);
      EXPECT_EQ(group_of["blocks.0.moe.router.weight"], "adamw");
    } else {
      expected_muon.push_back("blocks.0.mlp.fc1.weight");
      expected_muon.push_back("blocks.1.mlp.fc2.weight");
    }
    for (const std::string& n : expected_muon) EXPECT_EQ(group_of[n], "muon") << n;
    for (const char* n : {"x_embedder.proj.weight", "t_embedder.mlp.0.weight",
                          "y_embedder.embedding_table.weight", "final_layer.linear.weight",
                          "final_layer.adaLN_modulation.1.weight", "blocks.0.attn.qkv.bias"})
      EXPECT_EQ(group_of[n], "adamw") << n;
  }
}

TEST(DefaultDitGrouping, RecipeKeysReachTheGroupsAndErrorsPointAtThePatterns) {
  const std::vector<Tensor> ps = dit_params(2);
  const trainer::Recipe r = trainer::Recipe::from_string(
      "", "R",
      {"optim.name=muon", "optim.muon_lr=0.05", "optim.adamw_lr=1e-3", "optim.muon_momentum=0.9",
       "optim.muon_nesterov=false", "optim.muon_scale=moonlight", "optim.weight_decay=0.1",
       "optim.muon_patterns=blocks.*.attn.*.weight"});
  const auto opt = trainer::optimizer_from_recipe(r, ps);
  const auto& multi = dynamic_cast<const MultiOptimizer&>(*opt);
  const auto& muon = dynamic_cast<const Muon&>(multi.group_optimizer(0));
  EXPECT_EQ(muon.config().lr, 0.05);
  EXPECT_EQ(muon.config().momentum, 0.9);
  EXPECT_FALSE(muon.config().nesterov);
  EXPECT_EQ(muon.config().scale, MuonScale::moonlight);
  EXPECT_EQ(muon.config().weight_decay, 0.1);
  EXPECT_EQ(muon.params().size(), 4u);  // qkv and proj of two blocks
  const auto& adam = dynamic_cast<const AdamW&>(multi.group_optimizer(1));
  EXPECT_EQ(adam.config().lr, 1e-3);
  EXPECT_EQ(adam.config().weight_decay, 0.1);

  const trainer::Recipe typo = trainer::Recipe::from_string(
      "", "R", {"optim.name=muon", "optim.muon_patterns=blocks.*.atn.*.weight"});
  const std::string e = error_of([&] { trainer::optimizer_from_recipe(typo, ps); });
  EXPECT_TRUE(contains(e, "optim.muon_patterns: [param_groups] group 'muon'")) << e;
  EXPECT_TRUE(contains(e, "matches no parameter")) << e;
  const trainer::Recipe biases =
      trainer::Recipe::from_string("", "R", {"optim.name=muon", "optim.muon_patterns=blocks.*"});
  EXPECT_TRUE(contains(error_of([&] { trainer::optimizer_from_recipe(biases, ps); }),
                       "Muon needs matrices"));
}

}  // namespace
}  // namespace loom::optim
