#pragma once
// Model FLOPs of DiT training, counted as the PyTorch peer counts them
// (../shared/bench/dit_ref.py, train_flops_per_image) so loom's TFLOP/s and MFU compare with the
// peer's: 3 x the forward matmul FLOPs of qkv + proj, the MLP (or the routed experts, the shared
// experts and the router) and attention's scores and values. Embedders and the final layer are
// not counted.
#include "models/dit/dit.h"

namespace loom::dit {

double train_flops_per_image(const DiTConfig& config);

}  // namespace loom::dit
