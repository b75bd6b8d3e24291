// Fashion-MNIST IDX loading: the real Debian files when installed, and crafted small files in a
// temporary folder for the parser's values and every error path.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "core/loom.h"
#include "data/fashion_mnist.h"

namespace loom::data {
namespace {

namespace fs = std::filesystem;

bool real_files_present(const std::string& dir) {
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
    if (!fs::is_regular_file(fs::path(dir) / f)) return false;
  return true;
}

TEST(FashionMnistReal, TrainAndTestSplits) {
  const std::string dir = default_fashion_mnist_dir();
  if (!real_files_present(dir))
    GTEST_SKIP() << "Fashion-MNIST not found in " << dir
                 << " (install dataset-fashion-mnist or set LOOM_FASHION_MNIST_DIR)";
  for (bool train : {true, false}) {
    const ImageDataset ds = load_fashion_mnist(dir, train);
    const int64_t n = train ? 60000 : 10000;
    EXPECT_EQ(ds.images.shape(), (Shape{n, 1, 28, 28}));
    EXPECT_EQ(ds.images.dtype(), DType::f32);
    EXPECT_EQ(ds.labels.shape(), (Shape{n}));
    EXPECT_EQ(ds.labels.dtype(), DType::i64);
    const float* px = ds.images.data<float>();
    const auto [lo, hi] = std::minmax_element(px, px + ds.images.numel());
    EXPECT_EQ(*lo, 0.0f);
    EXPECT_EQ(*hi, 1.0f);
    // Fashion-MNIST is balanced: every class holds exactly a tenth of each split.
    std::vector<int64_t> counts(10, 0);
    for (int64_t l : ds.labels.to_vector<int64_t>()) {
      ASSERT_GE(l, 0);
      ASSERT_LE(l, 9);
      ++counts[size_t(l)];
    }
    for (int64_t c : counts) EXPECT_EQ(c, n / 10);
  }
}

TEST(FashionMnistReal, LimitKeepsThePrefix) {
  const std::string dir = default_fashion_mnist_dir();
  if (!real_files_present(dir)) GTEST_SKIP() << "Fashion-MNIST not found in " << dir;
  const ImageDataset full = load_fashion_mnist(dir, false);
  const ImageDataset part = load_fashion_mnist(dir, false, 100);
  ASSERT_EQ(part.images.shape(), (Shape{100, 1, 28, 28}));
  const auto a = part.images.to_vector<float>();
  const auto b = full.images.narrow(0, 0, 100).to_vector<float>();
  EXPECT_EQ(a, b);
  EXPECT_EQ(part.labels.to_vector<int64_t>(), full.labels.narrow(0, 0, 100).to_vector<int64_t>());
}

// Writes IDX files by hand into a fresh temporary folder.
class FashionMnistFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("loom_fmnist_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static void put_u32(std::vector<unsigned char>& out, uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<unsigned char>(v >> s));
  }

  void write_gz(const std::string& name, const std::vector<unsigned char>& bytes) const {
    gzFile f = gzopen(path(name).c_str(), "wb");
    ASSERT_NE(f, nullptr);
    if (!bytes.empty())
      ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
    ASSERT_EQ(gzclose(f), Z_OK);
  }

  // Image file: header (magic, n, rows, cols) then `payload` bytes (pixel i = (i * 7) % 256).
  void write_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, size_t payload,
                    bool train = true) const {
    std::vector<unsigned char> b;
    put_u32(b, magic);
    put_u32(b, n);
    put_u32(b, rows);
    put_u32(b, cols);
    for (size_t i = 0; i < payload; ++i) b.push_back(static_cast<unsigned char>((i * 7) % 256));
    write_gz(std::string(train ? "train" : "t10k") + "-images-idx3-ubyte.gz", b);
  }
  void write_labels(uint32_t magic, uint32_t n, const std::vector<unsigned char>& labels,
                    bool train = true) const {
    std::vector<unsigned char> b;
    put_u32(b, magic);
    put_u32(b, n);
    b.insert(b.end(), labels.begin(), labels.end());
    write_gz(std::string(train ? "train" : "t10k") + "-labels-idx1-ubyte.gz", b);
  }

  // Runs the loader, expecting a loom::Error whose message holds every fragment.
  void expect_error(const std::vector<std::string>& fragments, bool train = true) const {
    try {
      load_fashion_mnist(dir_.string(), train);
      ADD_FAILURE() << "expected loom::Error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      for (const std::string& f : fragments)
        EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' missing from: " << msg;
    }
  }

  fs::path dir_;
};

constexpr uint32_t kImg = 0x803, kLab = 0x801, kPix = 28 * 28;

TEST_F(FashionMnistFiles, ParsesValuesAndLabels) {
  write_images(kImg, 3, 28, 28, 3 * kPix, /*train=*/false);
  write_labels(kLab, 3, {9, 0, 4}, /*train=*/false);
  const ImageDataset ds = load_fashion_mnist(dir_.string(), false);
  ASSERT_EQ(ds.images.shape(), (Shape{3, 1, 28, 28}));
  EXPECT_EQ(ds.labels.to_vector<int64_t>(), (std::vector<int64_t>{9, 0, 4}));
  const auto px = ds.images.to_vector<float>();
  for (size_t i : {size_t(0), size_t(1), size_t(500), size_t(3 * kPix - 1)})
    EXPECT_FLOAT_EQ(px[i], float((i * 7) % 256) / 255.0f) << "pixel " << i;
}

TEST_F(FashionMnistFiles, LimitReadsOnlyThePrefix) {
  write_images(kImg, 3, 28, 28, 3 * kPix);
  write_labels(kLab, 3, {1, 2, 3});
  const ImageDataset ds = load_fashion_mnist(dir_.string(), true, 2);
  EXPECT_EQ(ds.images.shape(), (Shape{2, 1, 28, 28}));
  EXPECT_EQ(ds.labels.to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));
}

TEST_F(FashionMnistFiles, BadImageMagicNamesTheFile) {
  write_images(0x801, 2, 28, 28, 2 * kPix);
  write_labels(kLab, 2, {0, 1});
  expect_error({path("train-images-idx3-ubyte.gz"), "bad magic", "0x00000801"});
}

TEST_F(FashionMnistFiles, BadLabelMagicNamesTheFile) {
  write_images(kImg, 2, 28, 28, 2 * kPix);
  write_labels(0x803, 2, {0, 1});
  expect_error({path("train-labels-idx1-ubyte.gz"), "bad magic", "0x00000803"});
}

TEST_F(FashionMnistFiles, WrongImageSizeIsRejected) {
  write_images(kImg, 2, 32, 32, 2 * 32 * 32);
  write_labels(kLab, 2, {0, 1});
  expect_error({path("train-images-idx3-ubyte.gz"), "32x32", "28x28"});
}

TEST_F(FashionMnistFiles, TruncatedImageDataNamesTheFile) {
  write_images(kImg, 3, 28, 28, 2 * kPix + 10);
  write_labels(kLab, 3, {0, 1, 2});
  expect_error({path("train-images-idx3-ubyte.gz"), "truncated", std::to_string(3 * kPix)});
}

TEST_F(FashionMnistFiles, TruncatedHeaderNamesTheFile) {
  write_gz("train-images-idx3-ubyte.gz", {0, 0, 8, 3, 0, 0});
  write_labels(kLab, 1, {0});
  expect_error({path("train-images-idx3-ubyte.gz"), "truncated header"});
}

TEST_F(FashionMnistFiles, TruncatedLabelsNameTheFile) {
  write_images(kImg, 3, 28, 28, 3 * kPix);
  write_labels(kLab, 3, {0, 1});
  expect_error({path("train-labels-idx1-ubyte.gz"), "truncated"});
}

TEST_F(FashionMnistFiles, CountMismatchNamesBothFiles) {
  write_images(kImg, 3, 28, 28, 3 * kPix);
  write_labels(kLab, 2, {0, 1});
  expect_error({path("train-images-idx3-ubyte.gz"), path("train-labels-idx1-ubyte.gz"), "3 images",
                "2 labels"});
}

TEST_F(FashionMnistFiles, TrailingBytesAreRejected) {
  write_images(kImg, 2, 28, 28, 2 * kPix + 1);
  write_labels(kLab, 2, {0, 1});
  expect_error({path("train-images-idx3-ubyte.gz"), "trailing"});
}

TEST_F(FashionMnistFiles, LabelOutOfRangeIsRejected) {
  write_images(kImg, 2, 28, 28, 2 * kPix);
  write_labels(kLab, 2, {3, 10});
  expect_error({path("train-labels-idx1-ubyte.gz"), "label 10", "index 1"});
}

TEST_F(FashionMnistFiles, MissingFileNamesThePath) {
  write_images(kImg, 1, 28, 28, kPix, /*train=*/false);
  expect_error({path("t10k-labels-idx1-ubyte.gz"), "no such file"}, /*train=*/false);
}

TEST(FashionMnistDir, EnvironmentOverridesTheDefault) {
  const char* old = std::getenv("LOOM_FASHION_MNIST_DIR");
  const std::string saved = old ? old : "";
  ::setenv("LOOM_FASHION_MNIST_DIR", "/some/where", 1);
  EXPECT_EQ(default_fashion_mnist_dir(), "/some/where");
  ::unsetenv("LOOM_FASHION_MNIST_DIR");
  EXPECT_EQ(default_fashion_mnist_dir(), "/usr/share/datasets/fashion-mnist");
  if (old) ::setenv("LOOM_FASHION_MNIST_DIR", saved.c_str(), 1);
}

}  // namespace
}  // namespace loom::data
