// PyTorch parity of a whole DiT-MoE: tests/golden/fixtures/dit_moe_small.safetensors (made by
// tests/golden/gen_dit_fixture.py from shared/bench/dit_ref.py in float64, every weight random and
// non-zero) holds the weights under loom's names, inputs x/t/y, the output, the summed balance
// loss, the per-layer expert counts and the gradient of sum(out * w) + aux_loss for every
// parameter. loom loads the weights into a float64 DiT, runs forward in training mode without
// label dropout, and must agree to 1e-9 everywhere.
#include <cstdlib>
#include <map>
#include <string>

#include "core/safetensors.h"
#include "models/dit/dit.h"
#include "testing.h"

namespace loom {
namespace {

using testing::allclose;

constexpr double kTol = 1e-9;

std::map<std::string, Tensor> load_fixture() {
  const char* root = std::getenv("LOOM_SOURCE_DIR");
  const std::string path =
      std::string(root ? root : ".") + "/tests/golden/fixtures/dit_moe_small.safetensors";
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : load_safetensors(path).tensors) out.emplace(name, t);
  return out;
}

const Tensor& at(const std::map<std::string, Tensor>& f, const std::string& key) {
  const auto it = f.find(key);
  LOOM_CHECK(it != f.end(), "[parity] fixture has no tensor \"", key, "\"");
  return it->second;
}

dit::DiTConfig fixture_config() {
  return dit::DiTConfig{.input_size = 8,
                        .patch_size = 2,
                        .in_channels = 4,
                        .hidden_size = 32,
                        .depth = 2,
                        .num_heads = 4,
                        .num_classes = 10,
                        .class_dropout_prob = 0.1,
                        .learn_sigma = true,
                        .num_experts = 4,
                        .top_k = 2,
                        .num_shared_experts = 2};
}

}  // namespace

TEST(DiTParity, MoEForwardAuxAndEveryGradientMatchPyTorch) {
  const auto f = load_fixture();
  Generator gen(1);
  dit::DiT m(fixture_config(), gen);
  m.to(DType::f64);
  // loom's own sin-cos table is the reference's (computed in double, stored as f32 like the
  // reference's; the fixture holds the f64 table, which is loaded below).
  EXPECT_TRUE(allclose(m.pos_embed(), at(f, "pos_embed"), 1e-7, 0));

  nn::StateDict state;
  for (const auto& [name, p] : m.named_parameters()) state.insert(name, at(f, name));
  state.insert("pos_embed", at(f, "pos_embed"));
  m.load_state_dict(state);
  m.train();

  const dit::DiT::Output o = m.forward(at(f, "x"), at(f, "t"), at(f, "y"));
  EXPECT_TRUE(allclose(o.out, at(f, "out"), kTol, kTol)) << "out";
  ASSERT_TRUE(o.aux_loss.defined());
  EXPECT_NEAR(o.aux_loss.item(), at(f, "aux_loss").item(), kTol) << "aux_loss";
  ASSERT_EQ(o.expert_counts.size(), 2u);
  for (size_t i = 0; i < 2; ++i)
    EXPECT_EQ(o.expert_counts[i].to_vector<int64_t>(),
              at(f, "expert_counts." + std::to_string(i)).to_vector<int64_t>())
        << "layer " << i;

  (sum(o.out * at(f, "w")) + o.aux_loss).backward();
  int checked = 0;
  for (const auto& [name, p] : m.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(allclose(p.grad(), at(f, "grad." + name), kTol, kTol)) << "grad." << name;
    ++checked;
  }
  // Every stored gradient belongs to a loom parameter (nothing in the fixture went unchecked).
  int stored = 0;
  for (const auto& [key, t] : f) stored += key.rfind("grad.", 0) == 0;
  EXPECT_EQ(checked, stored);
}

}  // namespace loom
