// Builds without NCCL: the NCCL backend's entry points say it is missing.
#include "core/error.h"
#include "parallel/nccl_communicator.h"

namespace loom::parallel {

bool nccl_available() {
  return false;
}

std::shared_ptr<Communicator> nccl_communicator(const std::shared_ptr<Communicator>&, Device) {
  LOOM_FAIL("[nccl] this loom was built without NCCL (configure with CUDA and NCCL installed)");
}

}  // namespace loom::parallel
