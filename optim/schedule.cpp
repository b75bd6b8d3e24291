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
  if (c.kind == "constant") {
    return step < c.warmup_steps ? c.lr * double(step + 1) / double(c.warmup_steps) : c.lr;
  }
  if (c.kind == "cosine") return cosine(c.lr, c.min_lr, step, c.total_steps);
  if (c.kind == "warmup_cosine") {
    if (step < c.warmup_steps) return c.lr * double(step + 1) / double(c.warmup_steps);
    return cosine(c.lr, c.min_lr, step - c.warmup_steps, c.total_steps - c.warmup_steps);
  }
  if (c.kind == "wsd") {
    LOOM_CHECK(c.decay_fraction >= 0 && c.decay_fraction <= 1,
               "[schedule] wsd decay_fraction must be in [0, 1], got ", c.decay_fraction);
    if (step < c.warmup_steps) return c.lr * double(step + 1) / double(c.warmup_steps);
    const auto decay_steps = int64_t(std::llround(c.decay_fraction * double(c.total_steps)));
    const int64_t decay_start = c.total_steps - decay_steps;
    if (decay_steps == 0 || step <= decay_start) return c.lr;
    // Clamped past the end like cosine, so steps beyond total_steps stay at min_lr.
    const double progress = std::min(1.0, double(step - decay_start) / double(decay_steps));
    return c.lr + (c.min_lr - c.lr) * progress;
  }
  LOOM_FAIL("[schedule] unknown schedule '", c.kind,
            "' (expected constant, cosine, warmup_cosine or wsd)");
}

}  // namespace loom::optim
