// The attention backend switch of attention_cudnn.h (in every build: it is plain C++ state).
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/cuda/attention_cudnn.h"

namespace loom::kernels::cuda {

namespace {

AttentionBackend from_environment() {
  const char* value = std::getenv("LOOM_ATTENTION");
  if (!value || std::string(value) == "cudnn") return AttentionBackend::cudnn;
  if (std::string(value) == "loom") return AttentionBackend::loom;
  throw std::invalid_argument(
      std::string("LOOM_ATTENTION: expected \"cudnn\" or \"loom\", got \"") + value + "\"");
}

std::atomic<int>& chosen() {
  static std::atomic<int> backend{int(from_environment())};
  return backend;
}

}  // namespace

AttentionBackend attention_backend() {
  return AttentionBackend(chosen().load());
}

void set_attention_backend(AttentionBackend backend) {
  chosen().store(int(backend));
}

}  // namespace loom::kernels::cuda
