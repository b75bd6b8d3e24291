#include "models/classifier/convnet.h"

#include "core/loom.h"

namespace loom::classifier {

ConvNet::ConvNet(const ConvNetConfig& c, Generator& gen) : config_(c) {
  LOOM_CHECK(c.image_size % 4 == 0 && c.image_size > 0,
             "[ConvNet] image_size must be a positive "
             "multiple of 4, got ",
             c.image_size);
  const int64_t side = c.image_size / 4;
  conv1_ = register_module(
      "conv1", std::make_shared<nn::Conv2d>(nn::Conv2dConfig{.in_channels = c.in_channels,
                                                             .out_channels = c.width,
                                                             .kernel_size = {3, 3},
                                                             .padding = {1, 1}},
                                            gen));
  conv2_ = register_module(
      "conv2", std::make_shared<nn::Conv2d>(nn::Conv2dConfig{.in_channels = c.width,
                                                             .out_channels = 2 * c.width,
                                                             .kernel_size = {3, 3},
                                                             .padding = {1, 1}},
                                            gen));
  fc1_ = register_module(
      "fc1", std::make_shared<nn::Linear>(nn::LinearConfig{.in_features = 2 * c.width * side * side,
                                                           .out_features = c.feature_dim},
                                          gen));
  fc2_ = register_module(
      "fc2",
      std::make_shared<nn::Linear>(
          nn::LinearConfig{.in_features = c.feature_dim, .out_features = c.num_classes}, gen));
}

ConvNet::Output ConvNet::forward(const Tensor& x) const {
  LOOM_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels && x.size(2) == config_.image_size &&
                 x.size(3) == config_.image_size,
             "[ConvNet] expected input [B, ", config_.in_channels, ", ", config_.image_size, ", ",
             config_.image_size, "], got ", shape_str(x.shape()));
  Tensor h = max_pool2d(relu(conv1_->forward(x)), {2, 2}, {2, 2});
  h = max_pool2d(relu(conv2_->forward(h)), {2, 2}, {2, 2});
  const Tensor features = relu(fc1_->forward(h.flatten(1)));
  return {fc2_->forward(features), features};
}

}  // namespace loom::classifier
