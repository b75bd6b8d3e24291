// libloom_kernel_trace.so: a kernel-level profile of any CUDA process, with no synchronization
// added (unlike LOOM_PROFILE_OPS). Preload it:
//   LD_PRELOAD=build-gpu/bench/kernel_trace/libloom_kernel_trace.so
//     build-gpu/bench/bench_dit_train --device cuda ...
// CUPTI's activity API records every kernel, memcpy and memset the process runs; at exit the
// records are summed per (demangled, shortened) name, copies per direction and size, and printed
// to stderr as a table sorted by total device time. LOOM_KERNEL_TRACE_ROWS sets how many rows
// (default 40). The time covers the whole process (warm-up included); divide by the step count
// for a per-step figure.
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Totals {
  double ns = 0;
  long calls = 0;
};

std::mutex g_mutex;
std::map<std::string, Totals>& totals() {
  static auto* t = new std::map<std::string, Totals>;  // outlives static destructors at exit
  return *t;
}

constexpr size_t kBufferBytes = size_t(8) << 20;

// Demangled kernel name without its argument list and anonymous namespaces, at most 130
// characters.
std::string short_name(const char* mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : mangled;
  std::free(d);
  const std::string anon = "(anonymous namespace)::";
  for (size_t at; (at = s.find(anon)) != std::string::npos;) s.erase(at, anon.size());
  if (const size_t paren = s.find('('); paren != std::string::npos && paren > 0) s.resize(paren);
  if (s.size() > 130) s = s.substr(0, 127) + "...";
  return s;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard<std::mutex> lock(g_mutex);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    std::string name;
    double ns = 0;
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
      case CUPTI_ACTIVITY_KIND_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel9*>(record);
        name = short_name(k->name);
        ns = double(k->end - k->start);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
        static const char* const kinds[] = {"?", "HtoD", "DtoH", "HtoA", "AtoH", "AtoA",
                                            "AtoD", "DtoA", "DtoD", "HtoH", "PtoP"};
        name = std::string("[memcpy ") + (m->copyKind < 11 ? kinds[m->copyKind] : "?") + " " +
               std::to_string(m->bytes) + " B]";
        ns = double(m->end - m->start);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
        name = "[memset]";
        ns = double(m->end - m->start);
        break;
      }
      default: continue;
    }
    Totals& t = totals()[name];
    t.ns += ns;
    ++t.calls;
  }
  std::free(buffer);
}

void print_table() {
  cuptiActivityFlushAll(1);
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<std::pair<std::string, Totals>> rows(totals().begin(), totals().end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  double all = 0;
  for (const auto& r : rows) all += r.second.ns;
  const char* env = std::getenv("LOOM_KERNEL_TRACE_ROWS");
  const size_t n = std::min(rows.size(), size_t(env ? std::atoi(env) : 40));
  std::fprintf(stderr, "loom kernel trace: %.3f ms of device time in %zu kernel names\n", all / 1e6,
               rows.size());
  std::fprintf(stderr, "%10s %8s %10s %6s  %s\n", "total ms", "calls", "us/call", "%", "kernel");
  for (size_t i = 0; i < n; ++i) {
    const Totals& t = rows[i].second;
    std::fprintf(stderr, "%10.2f %8ld %10.1f %6.1f  %s\n", t.ns / 1e6, t.calls,
                 t.ns / 1e3 / double(t.calls), 100 * t.ns / all, rows[i].first.c_str());
  }
}

__attribute__((constructor)) void start_trace() {
  cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
  for (CUpti_ActivityKind kind : {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
                                  CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET}) {
    if (cuptiActivityEnable(kind) != CUPTI_SUCCESS)
      std::fprintf(stderr, "loom kernel trace: CUPTI refused activity kind %d\n", int(kind));
  }
  std::atexit(print_table);
}

}  // namespace
