#include "core/autocast.h"

namespace loom {

namespace {
thread_local std::optional<DType> g_autocast;
}

AutocastGuard::AutocastGuard(DType dtype, bool enabled) : prev_(g_autocast) {
  LOOM_CHECK(is_floating(dtype), "[autocast] ", dtype_name(dtype), " is not a floating dtype");
  if (enabled) g_autocast = dtype;
}

AutocastGuard::~AutocastGuard() {
  g_autocast = prev_;
}

std::optional<DType> autocast_dtype() {
  return g_autocast;
}

Tensor autocast(const Tensor& t) {
  if (!g_autocast || !t.defined() || !t.device().is_cuda() || !is_floating(t.dtype()) ||
      t.dtype() == *g_autocast)
    return t;
  return t.to(*g_autocast);
}

}  // namespace loom
