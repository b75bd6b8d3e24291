// compare_runs REFERENCE CANDIDATE LOSS_RTOL PARAM_ATOL: checks that two run directories of the
// same recipe trained alike. Every step's loss in metrics.jsonl must agree within LOSS_RTOL
// (relative to the reference), and every tensor of the newest checkpoints' models element-wise
// within PARAM_ATOL. Prints the per-step losses and the largest parameter difference; exits 0 when
// both hold, 1 otherwise (with the reason), 2 for a usage error or an unreadable run.
// Used by tests/trainer/parallel_equivalence.sh.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <vector>

#include "core/error.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/output/metrics.h"

namespace {

using namespace loom;
using namespace loom::trainer;

std::vector<double> losses(const std::string& run) {
  std::vector<double> out;
  for (const auto& row : read_metrics(run + "/metrics.jsonl"))
    if (row.count("loss")) out.push_back(row.at("loss"));
  return out;
}

CheckpointContents newest(const std::string& run) {
  const auto dir = latest_checkpoint(run);
  LOOM_CHECK(dir.has_value(), "[compare_runs] no checkpoint under ", run);
  return load_checkpoint(*dir);
}

bool compare_losses(const std::string& ref, const std::string& cand, double rtol) {
  const std::vector<double> a = losses(ref), b = losses(cand);
  bool ok = a.size() == b.size() && !a.empty();
  if (!ok)
    std::printf("FAIL: %zu logged losses in the reference, %zu in the candidate\n", a.size(),
                b.size());
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double rel = std::abs(a[i] - b[i]) / std::abs(a[i]);
    const bool good = rel <= rtol;
    std::printf("  loss #%zu: %.9g vs %.9g (relative difference %.2e)%s\n", i + 1, a[i], b[i], rel,
                good ? "" : "  FAIL");
    ok &= good;
  }
  return ok;
}

bool compare_parameters(const std::string& ref, const std::string& cand, double atol) {
  const CheckpointContents a = newest(ref), b = newest(cand);
  std::map<std::string, Tensor> theirs(b.model.begin(), b.model.end());
  bool ok = a.step == b.step && a.model.size() == b.model.size();
  if (!ok) std::printf("FAIL: checkpoints differ in step or tensor count\n");
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : a.model) {
    auto it = theirs.find(name);
    if (it == theirs.end() || it->second.shape() != t.shape()) {
      std::printf("FAIL: %s is missing or shaped differently in the candidate\n", name.c_str());
      ok = false;
      continue;
    }
    const auto va = t.to_vector<double>(), vb = it->second.to_vector<double>();
    for (size_t i = 0; i < va.size(); ++i) {
      const double d = std::abs(va[i] - vb[i]);
      if (!(d <= worst)) {  // NaN counts as the worst
        worst = std::isnan(d) ? INFINITY : d;
        worst_name = name;
      }
    }
  }
  const bool good = worst <= atol;
  std::printf("  parameters at step %lld: largest |difference| %.2e (in %s)%s\n",
              static_cast<long long>(a.step), worst, worst_name.c_str(), good ? "" : "  FAIL");
  return ok && good;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: compare_runs REFERENCE CANDIDATE LOSS_RTOL PARAM_ATOL\n");
    return 2;
  }
  try {
    std::printf("%s vs %s\n", argv[1], argv[2]);
    const bool losses_ok = compare_losses(argv[1], argv[2], std::atof(argv[3]));
    const bool params_ok = compare_parameters(argv[1], argv[2], std::atof(argv[4]));
    return losses_ok && params_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_runs: %s\n", e.what());
    return 2;
  }
}
