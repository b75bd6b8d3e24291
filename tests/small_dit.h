#pragma once
// The small DiT the parallel and sharding tests build: 8x8x4 inputs in 2x2 patches (16 tokens),
// width 32, 2 blocks of 4 heads, 10 classes; with `moe`, every block's MLP is 4 routed experts
// (top-2) plus 2 shared ones.
#include "models/dit/dit.h"

namespace loom::testing {

inline dit::DiTConfig small_dit(bool moe) {
  dit::DiTConfig c{.input_size = 8,
                   .patch_size = 2,
                   .in_channels = 4,
                   .hidden_size = 32,
                   .depth = 2,
                   .num_heads = 4,
                   .num_classes = 10};
  if (moe) {
    c.num_experts = 4;
    c.top_k = 2;
    c.num_shared_experts = 2;
  }
  return c;
}

}  // namespace loom::testing
