#pragma once
// `loom demo`: the smallest end-to-end training job. A 2-layer MLP (784 -> 256 -> ReLU -> 10) is
// trained with cross-entropy and AdamW on the Fashion-MNIST training images, then evaluated on the
// 10000 test images. The data order is a fresh randperm per epoch drawn from Generator(seed, 1)
// and the weights from Generator(seed, 0), so a given (seed, steps, batch, lr, threads)
// reproduces the same losses run to run (another thread count may round OpenBLAS's GEMMs
// differently). Batches that would run past the end of an epoch are dropped.
//
// Progress goes to `out`: a header, one line every `log_every` steps (step, mean loss over those
// steps, img/s over those steps), and the test accuracy. Bad settings or missing data throw
// loom::Error naming the setting or the file.
#include <cstdint>
#include <iosfwd>
#include <string>

namespace loom::trainer {

struct DemoConfig {
  int64_t steps = 1000;
  int64_t batch = 128;
  double lr = 1e-3;
  int threads = 0;       // CPU threads; 0 keeps the default (LOOM_NUM_THREADS or all cores)
  std::string data_dir;  // empty: data::default_fashion_mnist_dir()
  uint64_t seed = 0;
  int64_t log_every = 50;
};

struct DemoResult {
  double final_loss = 0;     // mean loss over the last logging interval
  double test_accuracy = 0;  // fraction of the test images classified correctly
  double train_seconds = 0;  // wall time of the training steps (data loading excluded)
};

DemoResult run_demo(const DemoConfig& config, std::ostream& out);

}  // namespace loom::trainer
