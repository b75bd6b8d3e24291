#pragma once
// The diffusion trainer's log line: the statistics gathered between two lines (already reduced
// over the data-parallel ranks) and how they print. One line reads
//   step    400/800 | loss 0.07725 | 4082 img/s (2.5 TFLOP/s, MFU 0.317%, 0.603 GiB) | lr 0.000599
//     | grad 0.256 | load 1.01 | 13.5s, eta 13.5s
// (the parenthesis on CUDA only, the load with experts only), and the same numbers go to
// metrics.jsonl as fields.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace loom::trainer {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0);
// "0.0772": a number with `precision` significant digits.
std::string fmt(double v, int precision = 4);

// Mean over layers of each layer's max/mean expert load (1 = perfectly balanced).
double load_imbalance(const std::vector<std::vector<double>>& counts);

// Statistics accumulated between two log lines.
struct IntervalStats {
  double loss = 0, mse = 0, vb = 0, aux = 0, grad_norm = 0;
  int64_t steps = 0, images = 0;
  std::vector<std::vector<double>> expert_counts;  // [layer][expert]
  Clock::time_point start = Clock::now();

  // Adds counts flattened as [layer * experts + expert].
  void add_expert_counts(const std::vector<double>& flat, int64_t experts);
};

// counts[l * E + e] += layer_counts[l][e] (one i64 [E] tensor per MoE layer, any device).
void add_layer_counts(std::vector<double>& counts, const std::vector<Tensor>& layer_counts);

// What the line needs beside the interval's statistics.
struct StepContext {
  int64_t step = 0, total = 0;
  double lr = 0;
  double elapsed = 0;        // seconds of training over every session of the run
  double steps_per_s = 0;    // this session's rate, for the ETA
  bool vb_terms = false;     // DDPM with a learned variance: report mse and vb apart
  int64_t skipped_steps = 0;
  // On CUDA: model FLOPs per image (the peer's count) and the device's peak allocated bytes.
  std::optional<double> train_flops_per_image;
  int64_t peak_bytes = 0;
};

struct StepLine {
  std::string text;
  std::vector<std::pair<std::string, double>> fields;  // for metrics.jsonl
};

StepLine format_step_line(const IntervalStats& iv, const StepContext& c);

}  // namespace loom::trainer
