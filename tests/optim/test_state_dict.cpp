// Optimizer state through state_dict / load_state_dict: the checkpoint keys of every optimizer
// (the same as the trainer's checkpoints have always had), a restored optimizer continuing bit
// for bit, missing entries starting fresh, and errors that name the entry.
#include <algorithm>

#include "optim/adamw.h"
#include "optim/muon.h"
#include "optim/sgd.h"
#include "sharded_testing.h"
#include "trainer/training_state.h"

namespace loom::optim {
namespace {

using namespace sharded_testing;

std::vector<std::string> keys_of(const StateDict& s) {
  std::vector<std::string> out;
  for (const auto& [k, t] : s.tensors) out.push_back(k);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(StateDict, KeysAreKindDotName) {
  const std::vector<Tensor> ps = copy_params(matrices(model_params()));
  const std::vector<Tensor> two = {ps[1], ps[2]};  // qkv.weight, proj.weight
  AdamW adam(two, kAdamW);
  Muon muon(two, kMuon);
  Sgd sgd(two, {.lr = 0.1, .momentum = 0.9});
  for (Optimizer* opt : std::initializer_list<Optimizer*>{&adam, &muon, &sgd}) step_with(*opt, 0);
  const std::vector<std::string> names = names_of(two);
  EXPECT_EQ(keys_of(state_dict(adam, names)),
            (std::vector<std::string>{
                "exp_avg.blocks.0.attn.proj.weight", "exp_avg.blocks.0.attn.qkv.weight",
                "exp_avg_sq.blocks.0.attn.proj.weight", "exp_avg_sq.blocks.0.attn.qkv.weight"}));
  EXPECT_EQ(state_dict(adam, names).counters,
            (std::map<std::string, int64_t>{{"optim.step.blocks.0.attn.proj.weight", 1},
                                            {"optim.step.blocks.0.attn.qkv.weight", 1}}));
  EXPECT_EQ(keys_of(state_dict(muon, names)),
            (std::vector<std::string>{"muon_momentum.blocks.0.attn.proj.weight",
                                      "muon_momentum.blocks.0.attn.qkv.weight"}));
  EXPECT_EQ(keys_of(state_dict(sgd, names)),
            (std::vector<std::string>{"momentum.blocks.0.attn.proj.weight",
                                      "momentum.blocks.0.attn.qkv.weight"}));
}

TEST(StateDict, MatchesTheTrainersCheckpointEntries) {
  const std::vector<Tensor> ps = copy_params(model_params());
  MultiOptimizer opt(ps, muon_adamw_groups(), 1e-3);
  for (int s = 0; s < 2; ++s) step_with(opt, s);
  trainer::CheckpointContents ckpt;
  trainer::save_optimizer_state(opt, names_of(ps), trainer::ParamShards(), &ckpt);
  EXPECT_TRUE(same_state(state_dict(opt, names_of(ps)), {ckpt.optimizer, ckpt.counters}));
}

// A restored optimizer continues exactly like the original; a fresh one does not.
template <class Make>
void expect_restore_continues(Make make, const std::vector<Tensor>& init) {
  const std::vector<Tensor> ps = copy_params(init);
  std::unique_ptr<Optimizer> opt = make(ps);
  for (int s = 0; s < 3; ++s) step_with(*opt, s);
  const StateDict saved = state_dict(*opt, names_of(ps));
  const std::vector<Tensor> resumed = copy_params(ps), cold = copy_params(ps);
  std::unique_ptr<Optimizer> resumed_opt = make(resumed), cold_opt = make(cold);
  load_state_dict(*resumed_opt, names_of(resumed), saved);
  for (auto* o : {resumed_opt.get(), cold_opt.get()}) o->set_lr(opt->lr());
  for (int s = 3; s < 5; ++s)
    for (auto* o : {opt.get(), resumed_opt.get(), cold_opt.get()}) step_with(*o, s);
  EXPECT_TRUE(same_params(resumed, ps));
  EXPECT_FALSE(same_params(cold, ps)) << "the restored state made no difference";
  EXPECT_EQ(resumed_opt->state_bytes(), opt->state_bytes());
}

TEST(StateDict, EveryOptimizerResumesBitIdentically) {
  const std::vector<Tensor> all = model_params(), mats = matrices(all);
  expect_restore_continues(
      [](const std::vector<Tensor>& ps) { return std::make_unique<AdamW>(ps, kAdamW); }, all);
  expect_restore_continues(
      [](const std::vector<Tensor>& ps) { return std::make_unique<Muon>(ps, kMuon); }, mats);
  expect_restore_continues(
      [](const std::vector<Tensor>& ps) {
        return std::make_unique<Sgd>(ps, SgdConfig{.lr = 0.1, .momentum = 0.9, .nesterov = true});
      },
      all);
  expect_restore_continues(
      [](const std::vector<Tensor>& ps) {
        return std::make_unique<MultiOptimizer>(ps, muon_adamw_groups(), 1e-3);
      },
      all);
}

TEST(StateDict, MissingEntriesStartFreshAndForeignKindsAreIgnored) {
  const std::vector<Tensor> ps = copy_params(matrices(model_params()));
  AdamW opt(ps, kAdamW);
  StateDict in;
  in.tensors.emplace_back("muon_momentum." + ps[0].name(), zeros(ps[0].shape()));
  load_state_dict(opt, names_of(ps), in);
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(opt.state(i).step, 0);
    EXPECT_FALSE(opt.state(i).exp_avg.defined());
  }
  EXPECT_EQ(opt.state_bytes(), 0);
  step_with(opt, 0);
  int64_t numel = 0;
  for (const Tensor& p : ps) numel += p.numel();
  EXPECT_EQ(opt.state_bytes(), 2 * 4 * numel);
}

TEST(StateDict, ErrorsNameTheEntryAndTheParameter) {
  const std::vector<Tensor> ps = copy_params(matrices(model_params()));
  Muon muon(ps, kMuon);
  StateDict bad;
  bad.tensors.emplace_back("muon_momentum." + ps[1].name(), zeros({3, 3}));
  testing::expect_error([&] { load_state_dict(muon, names_of(ps), bad); },
                        {"checkpoint entry 'muon_momentum.blocks.0.attn.qkv.weight'", "[3, 3]"});
  testing::expect_error([&] { state_dict(muon, {"only_one"}); }, "1 names for the state of");

  AdamW adam(ps, kAdamW);
  std::vector<ParamState> state(ps.size());
  for (ParamState& s : state) s.counters["optim.step"] = 0;
  state[2].counters["optim.step"] = 4;  // a step count without moments
  testing::expect_error([&] { adam.load_state(state); },
                        {"[adamw] parameter 'blocks.0.attn.proj.weight'", "incomplete state"});
  state[2].counters.erase("optim.step");
  testing::expect_error([&] { adam.load_state(state); }, "counter 'optim.step' is missing");
  state[2].counters["optim.step"] = 0;
  state[2].tensors["momentum"] = zeros(ps[2].shape());
  testing::expect_error([&] { adam.load_state(state); },
                        "state 'momentum' is not kept by this optimizer");
  testing::expect_error([&] { adam.load_state({}); }, "0 parameter states for");
}

}  // namespace
}  // namespace loom::optim
