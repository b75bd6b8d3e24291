#pragma once
// Scoring generated images with a ConvNet trained by `loom train recipes/fmnist_classifier.toml`:
// class consistency (the fraction classified as the class they were generated for) and features
// for the Fréchet distance. The classifier's architecture is stored in its checkpoint's counters
// ("convnet.*"), so loading needs nothing but the checkpoint.
#include <memory>
#include <optional>
#include <string>

#include "models/classifier/convnet.h"
#include "trainer/checkpoint/checkpoint.h"

namespace loom::trainer {

void save_convnet_config(const classifier::ConvNetConfig& config, CheckpointContents* out);

// Loads a classifier from a checkpoint or run dir; throws naming the path when there is none.
std::shared_ptr<classifier::ConvNet> load_classifier(const std::string& path);
// The classifier the recipe names (eval.classifier), or the default run dir
// runs/fmnist_classifier when the key is empty; nullopt when the default has no checkpoint.
std::optional<std::string> find_classifier(const std::string& configured);

struct ClassifierScores {
  double accuracy = 0;  // fraction of images whose argmax equals the label
  Tensor features;      // [N, F] penultimate activations
};
// Runs the classifier in eval mode over images [N, C, H, W] in batches.
ClassifierScores score_images(classifier::ConvNet& net, const Tensor& images, const Tensor& labels);

}  // namespace loom::trainer
