#pragma once
// A small image classifier used to score generated samples (class consistency and the Fréchet
// distance of its features), trained by loom itself from recipes/fmnist_classifier.toml.
//   conv(C->w, 3x3, pad 1) ReLU maxpool2  conv(w->2w, 3x3, pad 1) ReLU maxpool2
//   flatten  Linear(2w*(S/4)^2 -> F) ReLU  Linear(F -> K)
// `features` are the F post-ReLU activations of the penultimate layer. Inputs [B, C, S, S] in
// [-1, 1] with S divisible by 4.
#include <memory>

#include "core/rng.h"
#include "models/nn/conv.h"
#include "models/nn/linear.h"

namespace loom::classifier {

struct ConvNetConfig {
  int64_t in_channels = 1;
  int64_t image_size = 28;
  int64_t num_classes = 10;
  int64_t width = 32;
  int64_t feature_dim = 128;
};

class ConvNet : public nn::Module {
 public:
  ConvNet(const ConvNetConfig& config, Generator& gen);

  struct Output {
    Tensor logits;    // [B, K]
    Tensor features;  // [B, F]
  };
  Output forward(const Tensor& x) const;
  const ConvNetConfig& config() const { return config_; }

 private:
  ConvNetConfig config_;
  std::shared_ptr<nn::Conv2d> conv1_, conv2_;
  std::shared_ptr<nn::Linear> fc1_, fc2_;
};

}  // namespace loom::classifier
