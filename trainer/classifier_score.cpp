#include "trainer/classifier_score.h"

#include <filesystem>

#include "core/loom.h"

namespace loom::trainer {

void save_convnet_config(const classifier::ConvNetConfig& c, CheckpointContents* out) {
  out->counters["convnet.in_channels"] = c.in_channels;
  out->counters["convnet.image_size"] = c.image_size;
  out->counters["convnet.num_classes"] = c.num_classes;
  out->counters["convnet.width"] = c.width;
  out->counters["convnet.feature_dim"] = c.feature_dim;
}

std::shared_ptr<classifier::ConvNet> load_classifier(const std::string& path) {
  const std::string dir = resolve_checkpoint(path);
  const CheckpointContents ck = load_checkpoint(dir);
  auto get = [&](const char* key) {
    auto it = ck.counters.find(key);
    LOOM_CHECK(it != ck.counters.end(), "[eval] ", dir, " is not a classifier checkpoint (no ", key,
               "; train one with: loom train recipes/fmnist_classifier.toml)");
    return it->second;
  };
  const classifier::ConvNetConfig cfg{.in_channels = get("convnet.in_channels"),
                                      .image_size = get("convnet.image_size"),
                                      .num_classes = get("convnet.num_classes"),
                                      .width = get("convnet.width"),
                                      .feature_dim = get("convnet.feature_dim")};
  Generator gen(0);
  auto net = std::make_shared<classifier::ConvNet>(cfg, gen);
  nn::StateDict state;
  for (const auto& [name, t] : ck.model) state.insert(name, t);
  net->load_state_dict(state);
  net->eval();
  return net;
}

std::optional<std::string> find_classifier(const std::string& configured) {
  if (!configured.empty()) return configured;
  const std::string fallback = "runs/fmnist_classifier";
  if (std::filesystem::exists(fallback) && latest_checkpoint(fallback)) return fallback;
  return std::nullopt;
}

ClassifierScores score_images(classifier::ConvNet& net, const Tensor& images,
                              const Tensor& labels) {
  NoGradGuard guard;
  const bool was_training = net.is_training();
  net.eval();
  const int64_t n = images.size(0), batch = 256;
  std::vector<Tensor> features;
  int64_t correct = 0;
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t e = std::min(n, b + batch);
    const auto out = net.forward(images.slice(0, b, e).contiguous());
    const Tensor pred = argmax(out.logits, 1);
    correct += int64_t(sum(eq(pred, labels.slice(0, b, e).to(DType::i64)).to(DType::i64)).item());
    features.push_back(out.features);
  }
  net.train(was_training);
  return {n == 0 ? 0.0 : double(correct) / double(n), cat(features, 0)};
}

}  // namespace loom::trainer
