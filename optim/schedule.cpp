#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace loom::optim {

namespace {
double cosine(double lr, double min_lr, int64_t step, int64_t total) {
  const double progress = std::clamp(double(step) / double(std::max<int64_t>(total, 1)), 0.0, 1.0);
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}
}  // namespace

double learning_rate_at(const ScheduleConfig& c, int64_t step) {
  LOOM_CHECK(c.total_steps >= 1, "[schedule] total_steps must be >= 1, got ", c.total_steps);
  if (c.kind == "constant") return c.lr;
  if (c.kind == "cosine") return cosine(c.lr, c.min_lr, step, c.total_steps);
  if (c.kind == "warmup_cosine") {
    if (step < c.warmup_steps) return c.lr * double(step + 1) / double(c.warmup_steps);
    return cosine(c.lr, c.min_lr, step - c.warmup_steps, c.total_steps - c.warmup_steps);
  }
  LOOM_FAIL("[schedule] unknown schedule '", c.kind,
            "' (expected constant, cosine or warmup_cosine)");
}

}  // namespace loom::optim
