#include "core/profiler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "kernels/cuda/runtime.h"

namespace loom::profiler {

namespace {

struct Entry {
  double seconds = 0;
  int64_t calls = 0;
};

// The table, printed when the process exits.
struct Table {
  std::map<std::string, Entry> entries;
  ~Table() {
    if (entries.empty()) return;
    std::vector<std::pair<std::string, Entry>> rows(entries.begin(), entries.end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    double total = 0;
    for (const auto& [name, e] : rows) total += e.seconds;
    std::fprintf(stderr, "loom op profile (LOOM_PROFILE_OPS): %.3f s in ops\n", total);
    std::fprintf(stderr, "%-36s %10s %8s %10s %6s\n", "op", "total ms", "calls", "us/call", "%");
    for (const auto& [name, e] : rows)
      std::fprintf(stderr, "%-36s %10.2f %8lld %10.1f %6.1f\n", name.c_str(), e.seconds * 1e3,
                   static_cast<long long>(e.calls), e.seconds * 1e6 / double(e.calls),
                   100 * e.seconds / total);
  }
};

Table& table() {
  static Table t;
  return t;
}

void sync_devices() {
  for (int d = 0; d < kernels::cuda::device_count(); ++d) kernels::cuda::synchronize(d);
}

}  // namespace

bool enabled() {
  static const bool on = [] {
    const char* v = std::getenv("LOOM_PROFILE_OPS");
    return v && std::string(v) != "0";
  }();
  return on;
}

thread_local int g_depth = 0;

void timed(const char* name, const char* phase, const std::function<void()>& f) {
  if (!enabled() || g_depth > 0) {  // ops inside an op count toward the outer one
    f();
    return;
  }
  sync_devices();
  const auto t0 = std::chrono::steady_clock::now();
  ++g_depth;
  try {
    f();
  } catch (...) {
    --g_depth;
    throw;
  }
  --g_depth;
  sync_devices();
  Entry& e = table().entries[std::string(name) + "." + phase];
  e.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++e.calls;
}

}  // namespace loom::profiler
