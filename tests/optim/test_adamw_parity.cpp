// AdamW against torch.optim.AdamW: tests/golden/fixtures/adamw_5_steps.safetensors (written by
// tests/golden/gen_fixtures.py) holds three float32 parameters, five steps of gradients, torch's
// parameters after every step and its final moments. loom runs the same steps from the same
// values; only float32 rounding may differ (PyTorch's mul/add for the first moment against loom's
// lerp form), hence the ~1e-6 relative tolerance.
#include <cstdlib>
#include <map>

#include "core/safetensors.h"
#include "optim/adamw.h"
#include "testing.h"

namespace loom::optim {
namespace {

using testing::allclose;

constexpr double kRtol = 1e-6;
constexpr double kAtol = 1e-7;  // for elements that pass near zero

TEST(AdamWParity, FiveStepsMatchPyTorch) {
  const char* root = std::getenv("LOOM_SOURCE_DIR");
  SafetensorsFile f = load_safetensors(std::string(root ? root : ".") +
                                       "/tests/golden/fixtures/adamw_5_steps.safetensors");
  const std::map<std::string, Tensor> fx(f.tensors.begin(), f.tensors.end());
  auto at = [&](const std::string& key) {
    const auto it = fx.find(key);
    LOOM_CHECK(it != fx.end(), "[parity] adamw_5_steps has no tensor \"", key, "\"");
    return it->second;
  };
  auto setting = [&](const char* key) { return std::stod(f.metadata.at(key)); };

  const std::vector<std::string> names = {"w", "b", "e"};
  std::vector<Tensor> params;
  for (const std::string& n : names) params.push_back(at("param." + n).clone().set_requires_grad());
  AdamW opt(params, {.lr = setting("lr"),
                     .beta1 = setting("beta1"),
                     .beta2 = setting("beta2"),
                     .eps = setting("eps"),
                     .weight_decay = setting("weight_decay")});
  const int steps = int(setting("steps"));
  ASSERT_EQ(steps, 5);
  for (int t = 0; t < steps; ++t) {
    for (size_t i = 0; i < names.size(); ++i)
      params[i].set_grad(at("grad." + std::to_string(t) + "." + names[i]));
    opt.step();
    for (size_t i = 0; i < names.size(); ++i)
      EXPECT_TRUE(
          allclose(params[i], at("after." + std::to_string(t) + "." + names[i]), kAtol, kRtol))
          << "step " << t + 1 << ", parameter " << names[i];
  }
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(opt.state(i).step, steps);
    EXPECT_TRUE(allclose(opt.state(i).exp_avg, at("exp_avg." + names[i]), 1e-9, kRtol)) << names[i];
    EXPECT_TRUE(allclose(opt.state(i).exp_avg_sq, at("exp_avg_sq." + names[i]), 1e-12, kRtol))
        << names[i];
  }
}

}  // namespace
}  // namespace loom::optim
