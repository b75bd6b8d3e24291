#include "models/moe/expert_dispatch.h"

#include <cmath>

#include "core/error.h"

namespace loom::moe {

int64_t expert_capacity(double capacity_factor, int64_t n_tokens, int64_t top_k,
                        int64_t n_experts) {
  LOOM_CHECK(capacity_factor >= 0 && std::isfinite(capacity_factor),
             "[MoELayer] capacity_factor must be finite and >= 0 (0 = dropless), got ",
             capacity_factor);
  LOOM_CHECK(n_tokens >= 1 && top_k >= 1 && n_experts >= 1,
             "[MoELayer] expert capacity needs positive sizes, got ", n_tokens, " tokens, top_k ",
             top_k, ", ", n_experts, " experts");
  if (capacity_factor == 0) return 0;
  return int64_t(std::ceil(capacity_factor * double(n_tokens * top_k) / double(n_experts)));
}

}  // namespace loom::moe
