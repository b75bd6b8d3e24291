#include "data/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <vector>

namespace loom::data {

namespace {

constexpr uint32_t kImageMagic = 0x00000803;  // ubyte, 3 dims
constexpr uint32_t kLabelMagic = 0x00000801;  // ubyte, 1 dim
constexpr int64_t kSide = 28;
constexpr int64_t kClasses = 10;

// One open IDX file; every read failure names the file.
class IdxReader {
 public:
  explicit IdxReader(std::string path) : path_(std::move(path)) {
    LOOM_CHECK(std::filesystem::is_regular_file(path_), "[fashion_mnist] ", path_,
               ": no such file (install the dataset-fashion-mnist package with scripts/setup.sh,"
               " or point LOOM_FASHION_MNIST_DIR / --data at a folder holding the IDX files)");
    file_ = gzopen(path_.c_str(), "rb");
    LOOM_CHECK(file_ != nullptr, "[fashion_mnist] ", path_, ": cannot open");
  }
  ~IdxReader() {
    if (file_) gzclose(file_);
  }
  IdxReader(const IdxReader&) = delete;
  IdxReader& operator=(const IdxReader&) = delete;

  const std::string& path() const { return path_; }

  // IDX integers are big-endian regardless of the host.
  uint32_t read_u32(const char* what) {
    unsigned char b[4];
    read_bytes(b, 4, what);
    return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3];
  }

  void read_bytes(void* dst, int64_t n, const char* what) {
    auto* p = static_cast<unsigned char*>(dst);
    int64_t got = 0;
    // gzread takes an unsigned int count, so large payloads go in pieces.
    while (got < n) {
      const unsigned chunk = unsigned(std::min<int64_t>(n - got, int64_t(1) << 30));
      const int r = gzread(file_, p + got, chunk);
      if (r < 0) {
        int errnum = 0;
        const char* msg = gzerror(file_, &errnum);
        LOOM_FAIL("[fashion_mnist] ", path_, ": read error in ", what, ": ", msg);
      }
      if (r == 0) break;
      got += r;
    }
    LOOM_CHECK(got == n, "[fashion_mnist] ", path_, ": truncated ", what, ": expected ", n,
               " bytes, got ", got);
  }

  // True when nothing follows the announced payload.
  bool at_end() {
    unsigned char extra;
    return gzread(file_, &extra, 1) == 0;
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string join(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

}  // namespace

std::string default_fashion_mnist_dir() {
  const char* env = std::getenv("LOOM_FASHION_MNIST_DIR");
  if (env && *env) return env;
  return "/usr/share/datasets/fashion-mnist";
}

ImageDataset load_fashion_mnist(const std::string& dir, bool train, int64_t limit) {
  const std::string prefix = train ? "train" : "t10k";
  IdxReader images(join(dir, prefix + "-images-idx3-ubyte.gz"));
  IdxReader labels(join(dir, prefix + "-labels-idx1-ubyte.gz"));

  const uint32_t im_magic = images.read_u32("header");
  LOOM_CHECK(im_magic == kImageMagic, "[fashion_mnist] ", images.path(), ": bad magic number ",
             hex32(im_magic), " (an IDX3 ubyte image file starts with ", hex32(kImageMagic), ")");
  const int64_t n_images = images.read_u32("header");
  const int64_t rows = images.read_u32("header");
  const int64_t cols = images.read_u32("header");
  LOOM_CHECK(rows == kSide && cols == kSide, "[fashion_mnist] ", images.path(), ": images are ",
             rows, "x", cols, ", expected 28x28");

  const uint32_t lb_magic = labels.read_u32("header");
  LOOM_CHECK(lb_magic == kLabelMagic, "[fashion_mnist] ", labels.path(), ": bad magic number ",
             hex32(lb_magic), " (an IDX1 ubyte label file starts with ", hex32(kLabelMagic), ")");
  const int64_t n_labels = labels.read_u32("header");
  LOOM_CHECK(n_images == n_labels, "[fashion_mnist] ", images.path(), " holds ", n_images,
             " images but ", labels.path(), " holds ", n_labels, " labels");

  const int64_t n = limit < 0 ? n_images : std::min(limit, n_images);
  const int64_t pixels = kSide * kSide;
  std::vector<unsigned char> raw(size_t(n * pixels));
  images.read_bytes(raw.data(), n * pixels, "image data");
  std::vector<unsigned char> raw_labels(static_cast<size_t>(n));
  labels.read_bytes(raw_labels.data(), n, "label data");
  if (n == n_images) {
    LOOM_CHECK(images.at_end(), "[fashion_mnist] ", images.path(), ": trailing bytes after ",
               n_images, " images");
    LOOM_CHECK(labels.at_end(), "[fashion_mnist] ", labels.path(), ": trailing bytes after ",
               n_labels, " labels");
  }

  ImageDataset ds;
  ds.images = empty({n, 1, kSide, kSide}, DType::f32);
  float* img = ds.images.data<float>();
  for (size_t i = 0; i < raw.size(); ++i) img[i] = float(raw[i]) / 255.0f;
  ds.labels = empty({n}, DType::i64);
  int64_t* lab = ds.labels.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = raw_labels[size_t(i)];
    LOOM_CHECK(v < kClasses, "[fashion_mnist] ", labels.path(), ": label ", v, " at index ", i,
               " is outside 0..9");
    lab[i] = v;
  }
  return ds;
}

}  // namespace loom::data
