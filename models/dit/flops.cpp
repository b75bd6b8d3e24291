#include "models/dit/flops.h"

namespace loom::dit {

double train_flops_per_image(const DiTConfig& c) {
  const double d = double(c.hidden_size);
  const double tokens = double((c.input_size / c.patch_size) * (c.input_size / c.patch_size));
  const double shared_hidden = double(c.num_shared_experts) * d;
  const double mlp = c.num_experts ? 12 * d * d * double(c.top_k) + 3 * d * shared_hidden +
                                         double(c.num_experts) * d
                                   : 8 * d * d;
  const double per_token = 4 * d * d + mlp + 2 * tokens * d;
  return 3 * 2 * tokens * double(c.depth) * per_token;
}

}  // namespace loom::dit
