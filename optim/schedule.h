#pragma once
// Learning-rate schedules as pure functions of the step (0-based step about to be taken), so a
// resumed run recomputes the same rate from the step counter alone.
//   constant:       lr (after a linear ramp over `warmup` steps when warmup > 0)
//   cosine:         min_lr + (lr - min_lr) * (1 + cos(pi * step / total)) / 2
//   warmup_cosine:  linear ramp from lr/warmup to lr over `warmup` steps, then cosine over the rest
//   wsd:            warmup-stable-decay: the same linear warmup, lr held constant, then a linear
//                   decay to min_lr over the last decay_fraction * total steps (rounded to whole
//                   steps); step total - decay_steps is the last one at lr, step total is at min_lr
#include <cstdint>
#include <string>

namespace loom::optim {

struct ScheduleConfig {
  std::string kind = "constant";  // "constant" | "cosine" | "warmup_cosine" | "wsd"
  double lr = 1e-3;
  double min_lr = 0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double decay_fraction = 0.2;  // wsd: share of total_steps spent decaying, in [0, 1]
};

// Throws loom::Error naming the schedule for an unknown kind, total_steps < 1, or a wsd
// decay_fraction outside [0, 1].
double learning_rate_at(const ScheduleConfig& config, int64_t step);

}  // namespace loom::optim
