// Activation checkpointing: the same outputs and gradients as running the function directly (to
// the bit on the CPU: the replay is the same arithmetic), for inputs and for parameters used
// inside, with several outputs including a non-floating one; nothing inside is recorded.
#include <gtest/gtest.h>

#include "core/loom.h"
#include "testing.h"

namespace loom {
namespace {

using testing::allclose;
using testing::uniform;

TEST(Checkpoint, SameValuesAndGradientsAsDirect) {
  const Tensor w = uniform({5, 4}, -1, 1, 1).set_requires_grad();
  const Tensor b = uniform({5}, -1, 1, 2).set_requires_grad();
  const CheckpointFn f = [&](const std::vector<Tensor>& in) {
    const Tensor h = gelu_tanh(linear(in[0], w, b)) * in[1];
    return std::vector<Tensor>{h, sum(square(h)), argmax(h, -1)};
  };
  const Tensor x0 = uniform({3, 4}, -1, 1, 3), s0 = uniform({3, 1}, -1, 1, 4);
  auto run = [&](bool use_checkpoint) {
    w.zero_grad();
    b.zero_grad();
    const Tensor x = x0.clone().set_requires_grad(), s = s0.clone().set_requires_grad();
    const std::vector<Tensor> out = use_checkpoint ? checkpoint(f, {x, s}) : f({x, s});
    (sum(out[0] * 2.0) + out[1]).backward();
    return std::vector<Tensor>{out[0].detach(), out[2], x.grad(), s.grad(), w.grad(), b.grad()};
  };
  const auto direct = run(false), ckpt = run(true);
  for (size_t i = 0; i < direct.size(); ++i)
    EXPECT_TRUE(allclose(ckpt[i], direct[i], 0, 0)) << "item " << i;
}

TEST(Checkpoint, KeepsOnlyItsInputsAndReplaysTheSecondOutput) {
  const Tensor w = uniform({4, 4}, -1, 1, 5).set_requires_grad();
  const CheckpointFn f = [&](const std::vector<Tensor>& in) {
    const Tensor h = tanh(matmul(in[0], w));
    return std::vector<Tensor>{h, mean(h)};
  };
  const Tensor x = uniform({2, 4}, -1, 1, 6).set_requires_grad();
  const std::vector<Tensor> out = checkpoint(f, {x});
  // One recorded node for the whole function: its outputs' producer is the checkpoint op.
  EXPECT_STREQ(out[0].grad_fn()->op->name(), "checkpoint");
  EXPECT_TRUE(out[0].grad_fn() == out[1].grad_fn());
  // Gradients through both outputs at once match finite differences.
  EXPECT_TRUE(testing::gradcheck(
      [&](const std::vector<Tensor>& in) {
        const std::vector<Tensor> o = checkpoint(f, in);
        return o[0] + o[1] * 3.0;
      },
      {uniform({2, 4}, -1, 1, 7)}));
}

}  // namespace
}  // namespace loom
