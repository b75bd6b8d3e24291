// attention_cudnn.h without cuDNN (CPU builds, or CUDA builds where cuDNN was not found): every
// call declines, so loom's own attention kernels serve all of them.
#include "kernels/cuda/attention_cudnn.h"

namespace loom::kernels::cuda {

bool cudnn_attention_forward(const AttentionArgs&, const void*, const void*, const void*, void*,
                             float*, DType) {
  return false;
}

bool cudnn_attention_backward(const AttentionArgs&, const void*, const void*, const void*,
                              const void*, const void*, const float*, void*, void*, void*, DType) {
  return false;
}

}  // namespace loom::kernels::cuda
