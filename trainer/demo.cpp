#include "trainer/demo.h"

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <ostream>

#include "core/loom.h"
#include "data/fashion_mnist.h"
#include "kernels/cpu/thread_pool.h"
#include "models/nn/linear.h"
#include "optim/adamw.h"
#include "trainer/step_report.h"

namespace loom::trainer {

namespace {

constexpr int64_t kPixels = 28 * 28;
constexpr int64_t kHidden = 256;
constexpr int64_t kClasses = 10;

class Mlp : public nn::Module {
 public:
  explicit Mlp(Generator& gen)
      : fc1_(register_module(
            "fc1", std::make_shared<nn::Linear>(
                       nn::LinearConfig{.in_features = kPixels, .out_features = kHidden}, gen))),
        fc2_(register_module(
            "fc2", std::make_shared<nn::Linear>(
                       nn::LinearConfig{.in_features = kHidden, .out_features = kClasses}, gen))) {}

  // images [B, 1, 28, 28] -> logits [B, 10]
  Tensor forward(const Tensor& images) const {
    return fc2_->forward(relu(fc1_->forward(images.reshape({images.size(0), kPixels}))));
  }

 private:
  std::shared_ptr<nn::Linear> fc1_, fc2_;
};

// printf into a string of any length.
std::string format(const char* f, ...) {
  va_list args, copy;
  va_start(args, f);
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, f, copy);
  va_end(copy);
  std::string s(size_t(std::max(n, 0)), '\0');
  std::vsnprintf(s.data(), s.size() + 1, f, args);
  va_end(args);
  return s;
}

double test_accuracy(const Mlp& model, const data::ImageDataset& test) {
  NoGradGuard no_grad;
  const int64_t n = test.images.size(0), chunk = 1000;
  int64_t correct = 0;
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t len = std::min(chunk, n - start);
    const auto pred =
        argmax(model.forward(test.images.narrow(0, start, len)), 1).to_vector<int64_t>();
    const auto truth = test.labels.narrow(0, start, len).to_vector<int64_t>();
    for (int64_t i = 0; i < len; ++i) correct += pred[size_t(i)] == truth[size_t(i)];
  }
  return double(correct) / double(n);
}

}  // namespace

DemoResult run_demo(const DemoConfig& config, std::ostream& out) {
  LOOM_CHECK(config.steps > 0, "[demo] --steps must be positive, got ", config.steps);
  LOOM_CHECK(config.batch > 0, "[demo] --batch must be positive, got ", config.batch);
  LOOM_CHECK(config.lr > 0, "[demo] --lr must be positive, got ", config.lr);
  LOOM_CHECK(config.threads >= 0 && config.threads <= 1024,
             "[demo] --threads must be in 1..1024, got ", config.threads);
  LOOM_CHECK(config.log_every > 0, "[demo] log interval must be positive, got ", config.log_every);
  if (config.threads > 0) kernels::cpu::set_num_threads(config.threads);

  const std::string dir =
      config.data_dir.empty() ? data::default_fashion_mnist_dir() : config.data_dir;
  const auto t_load = Clock::now();
  const data::ImageDataset train = data::load_fashion_mnist(dir, /*train=*/true);
  const data::ImageDataset test = data::load_fashion_mnist(dir, /*train=*/false);
  const int64_t n_train = train.images.size(0);
  LOOM_CHECK(config.batch <= n_train, "[demo] --batch ", config.batch,
             " is larger than the training set (", n_train, " images)");

  Generator init_gen(config.seed, 0), data_gen(config.seed, 1);
  Mlp model(init_gen);
  optim::AdamW opt(model.parameters(), {.lr = config.lr});

  out << format(
      "loom demo: MLP 784-256-10 on Fashion-MNIST (%lld train / %lld test images from "
      "%s, loaded in %.2fs)\n",
      (long long)n_train, (long long)test.images.size(0), dir.c_str(), seconds_since(t_load));
  out << format("  %lld steps, batch %lld, AdamW lr %g, threads %d, seed %llu\n",
                (long long)config.steps, (long long)config.batch, config.lr,
                kernels::cpu::num_threads(), (unsigned long long)config.seed)
      << std::flush;

  DemoResult result;
  Tensor perm;
  int64_t pos = n_train;  // forces a permutation at the first step
  double loss_sum = 0;
  int64_t loss_count = 0;
  const auto t_train = Clock::now();
  auto t_interval = t_train;
  for (int64_t step = 1; step <= config.steps; ++step) {
    if (pos + config.batch > n_train) {
      perm = randperm(n_train, data_gen);
      pos = 0;
    }
    const Tensor idx = perm.narrow(0, pos, config.batch);
    pos += config.batch;
    const Tensor x = index_select(train.images, 0, idx);
    const Tensor y = index_select(train.labels, 0, idx);

    opt.zero_grad();
    const Tensor loss = cross_entropy(model.forward(x), y);
    loss.backward();
    opt.step();
    loss_sum += loss.item();
    ++loss_count;

    if (step % config.log_every == 0 || step == config.steps) {
      const double dt = seconds_since(t_interval);
      result.final_loss = loss_sum / double(loss_count);
      out << format("step %6lld/%lld  loss %.4f  %8.0f img/s\n", (long long)step,
                    (long long)config.steps, result.final_loss,
                    double(loss_count * config.batch) / dt)
          << std::flush;
      loss_sum = 0;
      loss_count = 0;
      t_interval = Clock::now();
    }
  }
  result.train_seconds = seconds_since(t_train);
  result.test_accuracy = test_accuracy(model, test);
  out << format("test accuracy %.2f%% on %lld images (trained %.1fs, %.0f img/s overall)\n",
                100 * result.test_accuracy, (long long)test.images.size(0), result.train_seconds,
                double(config.steps * config.batch) / result.train_seconds)
      << std::flush;
  return result;
}

}  // namespace loom::trainer
