#include "trainer/step_report.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

#include "trainer/output/progress.h"

namespace loom::trainer {

namespace {
// The H200's dense bf16 tensor-core rate measured with a large GEMM (../shared/BENCH.md), the
// denominator of the MFU in the step line.
constexpr double kBf16PeakTflops = 790;
}  // namespace

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt(double v, int precision) {
  std::ostringstream os;
  os << std::setprecision(precision) << v;
  return os.str();
}

double load_imbalance(const std::vector<std::vector<double>>& counts) {
  double acc = 0;
  for (const auto& layer : counts) {
    double mx = 0, total = 0;
    for (double c : layer) {
      mx = std::max(mx, c);
      total += c;
    }
    acc += total > 0 ? mx / (total / double(layer.size())) : 1.0;
  }
  return counts.empty() ? 0.0 : acc / double(counts.size());
}

void IntervalStats::add_expert_counts(const std::vector<double>& flat, int64_t experts) {
  if (flat.empty()) return;
  const size_t e = size_t(experts);
  expert_counts.resize(flat.size() / e, std::vector<double>(e, 0.0));
  for (size_t i = 0; i < flat.size(); ++i) expert_counts[i / e][i % e] += flat[i];
}

void add_layer_counts(std::vector<double>& counts, const std::vector<Tensor>& layer_counts) {
  for (size_t l = 0; l < layer_counts.size(); ++l) {
    const auto c = layer_counts[l].to_vector<double>();
    counts.resize(layer_counts.size() * c.size(), 0.0);
    for (size_t e = 0; e < c.size(); ++e) counts[l * c.size() + e] += c[e];
  }
}

StepLine format_step_line(const IntervalStats& iv, const StepContext& c) {
  const double n = double(std::max<int64_t>(iv.steps, 1));
  const double img_s = double(iv.images) / std::max(seconds_since(iv.start), 1e-9);
  StepLine out;
  out.fields = {{"step", double(c.step)}, {"loss", iv.loss / n},           {"time", c.elapsed},
                {"lr", c.lr},             {"grad_norm", iv.grad_norm / n}, {"img_per_s", img_s}};
  if (c.vb_terms) {
    out.fields.push_back({"mse", iv.mse / n});
    out.fields.push_back({"vb", iv.vb / n});
  }
  std::ostringstream line;
  line << "step " << std::setw(6) << c.step << "/" << c.total << " | loss " << fmt(iv.loss / n)
       << " | " << fmt(img_s, 4) << " img/s";
  if (c.train_flops_per_image) {
    const double tflops = img_s * *c.train_flops_per_image / 1e12;
    const double peak_gib = double(c.peak_bytes) / double(1 << 30);
    out.fields.push_back({"model_tflops", tflops});
    out.fields.push_back({"peak_mem_gib", peak_gib});
    line << " (" << fmt(tflops, 3) << " TFLOP/s, MFU " << fmt(100 * tflops / kBf16PeakTflops, 3)
         << "%, " << fmt(peak_gib, 3) << " GiB)";
  }
  line << " | lr " << fmt(c.lr, 3) << " | grad " << fmt(iv.grad_norm / n, 3);
  if (!iv.expert_counts.empty()) {
    const double imb = load_imbalance(iv.expert_counts);
    out.fields.push_back({"aux_loss", iv.aux / n});
    out.fields.push_back({"load_imbalance", imb});
    for (size_t l = 0; l < iv.expert_counts.size(); ++l)
      out.fields.push_back(
          {"load_imbalance_layer" + std::to_string(l), load_imbalance({iv.expert_counts[l]})});
    line << " | load " << fmt(imb, 3);
  }
  if (c.skipped_steps) out.fields.push_back({"skipped_steps", double(c.skipped_steps)});
  line << " | " << format_duration(c.elapsed);
  if (c.steps_per_s > 0 && c.step < c.total)
    line << ", eta " << format_duration(double(c.total - c.step) / c.steps_per_s);
  out.text = line.str();
  return out;
}

}  // namespace loom::trainer
