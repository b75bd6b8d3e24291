#include "trainer/output/sample_file.h"

#include "core/safetensors.h"
#include "trainer/output/image_grid.h"

namespace loom::trainer {

bool is_image_batch(const Tensor& samples) {
  return samples.dim() == 4 && (samples.size(1) == 1 || samples.size(1) == 3);
}

std::string save_samples(const std::string& stem, const Tensor& samples, const Tensor& labels,
                         int64_t nrow) {
  if (is_image_batch(samples)) {
    const std::string path = stem + ".png";
    save_png(path, samples, nrow);
    return path;
  }
  const std::string path = stem + ".safetensors";
  save_safetensors(path, {{"samples", samples.to(Device::cpu()).to(DType::f32)},
                          {"labels", labels.to(Device::cpu()).to(DType::i64)}},
                   {{"content", "generated latents [N, C, H, W]; decode them with the "
                                "autoencoder the training latents came from"}});
  return path;
}

}  // namespace loom::trainer
