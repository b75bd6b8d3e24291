// compare_runs REFERENCE CANDIDATE LOSS_RTOL PARAM_ATOL: checks that two run directories of the
// same recipe trained alike. Every step's loss in metrics.jsonl must agree within LOSS_RTOL
// (relative to the reference), and every tensor of the newest checkpoints' models, EMAs and
// optimizer states element-wise within PARAM_ATOL (so the whole tensors a sharded run gathers for
// its checkpoint are checked too). Prints the per-step losses and the largest difference of each
// part; exits 0 when all hold, 1 otherwise (with the reason), 2 for a usage error or an unreadable
// run.
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

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// One part of the checkpoints (model, EMA, optimizer state), tensor by tensor.
bool compare_tensors(const char* part, long long step, const NamedTensors& mine,
                     const NamedTensors& other, double atol) {
  std::map<std::string, Tensor> theirs(other.begin(), other.end());
  bool ok = mine.size() == other.size();
  if (!ok) std::printf("FAIL: %s: %zu tensors vs %zu\n", part, mine.size(), other.size());
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : mine) {
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
  std::printf("  %s at step %lld: largest |difference| %.2e (in %s)%s\n", part, step, worst,
              worst_name.c_str(), good ? "" : "  FAIL");
  return ok && good;
}

bool compare_checkpoints(const std::string& ref, const std::string& cand, double atol) {
  const CheckpointContents a = newest(ref), b = newest(cand);
  if (a.step != b.step) {
    std::printf("FAIL: the newest checkpoints are of steps %lld and %lld\n",
                static_cast<long long>(a.step), static_cast<long long>(b.step));
    return false;
  }
  const long long step = a.step;
  const bool model = compare_tensors("parameters", step, a.model, b.model, atol);
  const bool ema = compare_tensors("EMA", step, a.ema, b.ema, atol);
  const bool optimizer = compare_tensors("optimizer state", step, a.optimizer, b.optimizer, atol);
  return model && ema && optimizer;
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
    const bool params_ok = compare_checkpoints(argv[1], argv[2], std::atof(argv[4]));
    return losses_ok && params_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_runs: %s\n", e.what());
    return 2;
  }
}
