// The sharded optimizer in one process (a group of one, LocalCommunicator): it equals the inner
// optimizer, keeps every unit, reports the same state under the same keys, and rejects a missing
// communicator. The multi-rank behaviour is tested under mpirun (mpi_sharded_optimizer.cpp).
#include "optim/sharded.h"
#include "sharded_testing.h"

namespace loom::optim {
namespace {

using namespace sharded_testing;

TEST(ShardedLocal, AGroupOfOneEqualsTheInnerOptimizer) {
  const auto local = std::make_shared<parallel::LocalCommunicator>("dp");
  const std::vector<Tensor> init = model_params();
  const std::vector<Tensor> ps = copy_params(init), ref = copy_params(init);
  MultiOptimizer sharded(ps, muon_adamw_groups(), 1e-3, local);
  MultiOptimizer single(ref, muon_adamw_groups(), 1e-3);
  for (int s = 0; s < 3; ++s) {
    step_with(sharded, s);
    step_with(single, s);
  }
  EXPECT_TRUE(same_params(ps, ref));
  EXPECT_TRUE(same_state(state_dict(sharded, names_of(ps)), state_dict(single, names_of(ref))));
  EXPECT_EQ(sharded.state_bytes(), single.state_bytes());
  const auto& muon = dynamic_cast<const ShardedOptimizer&>(sharded.group_optimizer(0));
  EXPECT_EQ(muon.plan().units.size(), muon.params().size() + 3);  // the 4-expert stack splits
  EXPECT_EQ(muon.inner().params().size(), muon.plan().units.size());
}

TEST(ShardedLocal, ErrorsComeFromTheInnerOptimizerOrNameTheProblem) {
  const auto local = std::make_shared<parallel::LocalCommunicator>("dp");
  const std::vector<Tensor> ps = copy_params(model_params());
  testing::expect_error([&] { distributed_muon(ps, kMuon, local); },
                        {"[muon] parameter 'x_embedder.proj.bias'", "AdamW group"});
  testing::expect_error([&] { zero1_adamw(ps, kAdamW, nullptr); },
                        "[sharded] needs a data-parallel communicator");
  // The shards travel as f32 on the parameters' one device: an f64 parameter is refused by name.
  std::vector<Tensor> wide = copy_params(model_params());
  wide[0] = wide[0].detach().to(DType::f64).set_name("wide");
  testing::expect_error([&] { zero1_adamw(wide, kAdamW, local); },
                        {"[sharded] parameter 'wide' has dtype f64", "parameters must be f32"});
}

}  // namespace
}  // namespace loom::optim
