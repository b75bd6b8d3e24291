#pragma once
// Learning-rate schedules as pure functions of the step (0-based step about to be taken), so a
// resumed run recomputes the same rate from the step counter alone.
//   constant:       lr
//   cosine:         min_lr + (lr - min_lr) * (1 + cos(pi * step / total)) / 2
//   warmup_cosine:  linear ramp from lr/warmup to lr over `warmup` steps, then cosine over the rest
#include <cstdint>
#include <string>

namespace loom::optim {

struct ScheduleConfig {
  std::string kind = "constant";  // "constant" | "cosine" | "warmup_cosine"
  double lr = 1e-3;
  double min_lr = 0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
};

// Throws loom::Error naming the schedule for an unknown kind or total_steps < 1.
double learning_rate_at(const ScheduleConfig& config, int64_t step);

}  // namespace loom::optim
