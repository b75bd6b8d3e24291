#include "data/dataset.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/rng.h"
#include "core/safetensors.h"
#include "data/fashion_mnist.h"

namespace loom::data {

namespace {

// Streams of the synthetic dataset's draws; distinct from the loader's so that a loader seeded
// like its dataset does not reuse the same random numbers.
constexpr uint64_t kSyntheticClassStream = 0x53594e0000000001ull;
constexpr uint64_t kSyntheticLabelStream = 0x53594e0000000002ull;
constexpr uint64_t kSyntheticNoiseStream = 0x53594e0000000003ull;

void check_index(const char* what, int64_t index, int64_t size) {
  LOOM_CHECK(index >= 0 && index < size, "[data] ", what, ": index ", index,
             " out of range for a dataset of ", size, " items");
}

// Images and labels already in memory, images in their final [-1, 1] form.
class InMemoryDataset : public Dataset {
 public:
  InMemoryDataset(std::string name, Tensor images, std::vector<int64_t> labels, int64_t num_classes)
      : name_(std::move(name)),
        images_(std::move(images)),
        labels_(std::move(labels)),
        num_classes_(num_classes) {}

  int64_t size() const override { return int64_t(labels_.size()); }
  Shape item_shape() const override {
    return Shape(images_.shape().begin() + 1, images_.shape().end());
  }
  int64_t num_classes() const override { return num_classes_; }
  void get(int64_t index, float* image_out, int64_t* label_out) const override {
    check_index(name_.c_str(), index, size());
    const int64_t n = numel_of(item_shape());
    std::memcpy(image_out, images_.data<float>() + index * n, size_t(n) * sizeof(float));
    *label_out = labels_[size_t(index)];
  }

 private:
  std::string name_;
  Tensor images_;  // [N, C, H, W] f32, contiguous
  std::vector<int64_t> labels_;
  int64_t num_classes_;
};

// Keeps the latents in their stored dtype (bf16 files stay half the size in memory) and widens
// one example per get().
class TensorFileDataset : public Dataset {
 public:
  TensorFileDataset(std::string path, Tensor latents, std::vector<int64_t> labels,
                    int64_t num_classes)
      : path_(std::move(path)),
        latents_(std::move(latents)),
        labels_(std::move(labels)),
        num_classes_(num_classes) {}

  int64_t size() const override { return int64_t(labels_.size()); }
  Shape item_shape() const override {
    return Shape(latents_.shape().begin() + 1, latents_.shape().end());
  }
  int64_t num_classes() const override { return num_classes_; }
  void get(int64_t index, float* image_out, int64_t* label_out) const override {
    check_index(path_.c_str(), index, size());
    const int64_t n = numel_of(item_shape());
    switch (latents_.dtype()) {
      case DType::f32:
        std::memcpy(image_out, latents_.data<float>() + index * n, size_t(n) * sizeof(float));
        break;
      case DType::bf16:
        widen(latents_.data<bf16>() + index * n, n, image_out);
        break;
      case DType::f16:
        widen(latents_.data<f16>() + index * n, n, image_out);
        break;
      default:
        LOOM_ASSERT(false, "dtype validated by the factory");
    }
    *label_out = labels_[size_t(index)];
  }

 private:
  template <class T>
  static void widen(const T* src, int64_t n, float* dst) {
    for (int64_t k = 0; k < n; ++k) dst[k] = float(src[k]);
  }

  std::string path_;
  Tensor latents_;  // [N, C, H, W] f32/bf16/f16, contiguous
  std::vector<int64_t> labels_;
  int64_t num_classes_;
};

class SyntheticDataset : public Dataset {
 public:
  SyntheticDataset(int64_t size, Shape item_shape, int64_t num_classes, uint64_t seed)
      : size_(size), shape_(std::move(item_shape)), num_classes_(num_classes), seed_(seed) {
    // Per (class, channel): x frequency, y frequency, phase, amplitude.
    Generator gen(seed_, kSyntheticClassStream);
    const Tensor u = rand({num_classes_, shape_[0], 4}, gen);
    params_ = u.to_vector<float>();
  }

  int64_t size() const override { return size_; }
  Shape item_shape() const override { return shape_; }
  int64_t num_classes() const override { return num_classes_; }

  void get(int64_t index, float* image_out, int64_t* label_out) const override {
    check_index("synthetic", index, size_);
    const int64_t C = shape_[0], H = shape_[1], W = shape_[2], n = C * H * W;
    // Each example owns a disjoint counter range, so its draws never depend on other calls.
    Generator label_gen(seed_, kSyntheticLabelStream);
    label_gen.set_offset(uint64_t(index));
    const int64_t label = randint(0, num_classes_, {1}, label_gen).data<int64_t>()[0];
    Generator noise_gen(seed_, kSyntheticNoiseStream);
    noise_gen.set_offset(uint64_t(index) * uint64_t((n + 3) / 4));
    const Tensor noise = randn({n}, noise_gen);
    const float* z = noise.data<float>();
    constexpr double two_pi = 6.283185307179586;
    for (int64_t c = 0; c < C; ++c) {
      const float* p = &params_[size_t((label * C + c) * 4)];
      // Frequencies 1..3 cycles per image keep the means smooth and distinct between classes.
      const double fx = 1 + std::floor(p[0] * 3), fy = 1 + std::floor(p[1] * 3);
      const double phase = two_pi * p[2], amp = 0.4 + 0.4 * p[3];
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          const int64_t k = (c * H + y) * W + x;
          const double mean =
              amp *
              std::sin(two_pi * (fx * double(x) / double(W) + fy * double(y) / double(H)) + phase);
          image_out[k] = float(std::clamp(mean + 0.1 * double(z[k]), -1.0, 1.0));
        }
    }
    *label_out = label;
  }

 private:
  int64_t size_;
  Shape shape_;
  int64_t num_classes_;
  uint64_t seed_;
  std::vector<float> params_;  // [num_classes, C, 4] uniform [0, 1)
};

int64_t parse_num_classes(const std::string& path, const std::string& text) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  LOOM_CHECK(ec == std::errc() && ptr == end && v > 0, "[data] ", path,
             ": metadata \"num_classes\" must be a positive integer, got \"", text, "\"");
  return v;
}

}  // namespace

std::shared_ptr<Dataset> fashion_mnist_dataset(const std::string& dir, bool train, int64_t limit) {
  ImageDataset raw = load_fashion_mnist(dir, train, limit);
  Tensor images = raw.images.contiguous();
  float* p = images.data<float>();
  for (int64_t k = 0, n = images.numel(); k < n; ++k) p[k] = p[k] * 2.0f - 1.0f;
  return std::make_shared<InMemoryDataset>("fashion_mnist " + dir, std::move(images),
                                           raw.labels.to_vector<int64_t>(), 10);
}

std::shared_ptr<Dataset> tensor_file_dataset(const std::string& path) {
  SafetensorsFile file = load_safetensors(path);
  Tensor latents, labels;
  for (auto& [name, t] : file.tensors) {
    if (name == "latents") latents = t;
    if (name == "labels") labels = t;
  }
  LOOM_CHECK(latents.defined(), "[data] ", path, ": no tensor named \"latents\"");
  LOOM_CHECK(labels.defined(), "[data] ", path, ": no tensor named \"labels\"");
  LOOM_CHECK(latents.dim() == 4, "[data] ", path, ": \"latents\" must be [N, C, H, W], got ",
             shape_str(latents.shape()));
  const DType ld = latents.dtype();
  LOOM_CHECK(ld == DType::f32 || ld == DType::bf16 || ld == DType::f16, "[data] ", path,
             ": \"latents\" must be f32, bf16 or f16, got ", dtype_name(ld));
  LOOM_CHECK(labels.dim() == 1, "[data] ", path, ": \"labels\" must be [N], got ",
             shape_str(labels.shape()));
  LOOM_CHECK(labels.dtype() == DType::i32 || labels.dtype() == DType::i64, "[data] ", path,
             ": \"labels\" must be i32 or i64, got ", dtype_name(labels.dtype()));
  const int64_t n = latents.size(0);
  LOOM_CHECK(labels.size(0) == n, "[data] ", path, ": \"latents\" holds ", n,
             " examples but \"labels\" holds ", labels.size(0));
  LOOM_CHECK(n > 0, "[data] ", path, ": the file holds no examples");
  for (int64_t d = 1; d < 4; ++d)
    LOOM_CHECK(latents.size(d) > 0, "[data] ", path,
               ": \"latents\" has an empty dimension: ", shape_str(latents.shape()));

  std::vector<int64_t> label_values = labels.to_vector<int64_t>();
  int64_t max_label = 0;
  for (size_t i = 0; i < label_values.size(); ++i) {
    LOOM_CHECK(label_values[i] >= 0, "[data] ", path, ": label ", label_values[i], " of example ",
               i, " is negative");
    max_label = std::max(max_label, label_values[i]);
  }
  int64_t num_classes = max_label + 1;
  if (const auto it = file.metadata.find("num_classes"); it != file.metadata.end()) {
    num_classes = parse_num_classes(path, it->second);
    LOOM_CHECK(max_label < num_classes, "[data] ", path, ": label ", max_label,
               " is out of range for metadata num_classes = ", num_classes);
  }
  return std::make_shared<TensorFileDataset>(path, latents.contiguous(), std::move(label_values),
                                             num_classes);
}

std::shared_ptr<Dataset> synthetic_dataset(int64_t size, Shape item_shape, int64_t num_classes,
                                           uint64_t seed) {
  LOOM_CHECK(size > 0, "[data] synthetic: size must be positive, got ", size);
  LOOM_CHECK(num_classes > 0, "[data] synthetic: num_classes must be positive, got ", num_classes);
  LOOM_CHECK(item_shape.size() == 3 && item_shape[0] > 0 && item_shape[1] > 0 && item_shape[2] > 0,
             "[data] synthetic: item_shape must be [C, H, W] with positive dims, got ",
             shape_str(item_shape));
  return std::make_shared<SyntheticDataset>(size, std::move(item_shape), num_classes, seed);
}

void load_examples(const Dataset& dataset, int64_t count, Tensor* images, Tensor* labels) {
  const int64_t n = count < 0 ? dataset.size() : std::min(count, dataset.size());
  Shape shape = dataset.item_shape();
  const int64_t item = numel_of(shape);
  shape.insert(shape.begin(), n);
  *images = empty(shape);
  *labels = empty({n}, DType::i64);
  for (int64_t i = 0; i < n; ++i)
    dataset.get(i, images->data<float>() + i * item, labels->data<int64_t>() + i);
}

}  // namespace loom::data
