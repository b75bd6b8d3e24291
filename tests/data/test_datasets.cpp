// Datasets: Fashion-MNIST (when installed), PNG class folders written here with libpng, tensor
// files written with save_safetensors, and the synthetic dataset; values and every error path.
#include <gtest/gtest.h>
#include <png.h>
#include <unistd.h>

#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/loom.h"
#include "data/dataset.h"
#include "data/fashion_mnist.h"
#include "data/loader.h"
#include "testing.h"

namespace loom::data {
namespace {

namespace fs = std::filesystem;

std::vector<float> item(const Dataset& ds, int64_t index, int64_t* label = nullptr) {
  std::vector<float> out(size_t(numel_of(ds.item_shape())));
  int64_t l = -1;
  ds.get(index, out.data(), &l);
  if (label) *label = l;
  return out;
}

int64_t label_of(const Dataset& ds, int64_t index) {
  int64_t l = -1;
  item(ds, index, &l);
  return l;
}

// Runs f, expecting a loom::Error whose message contains every one of `parts`.
using loom::testing::expect_error;

float to_unit(double v) {
  return float(v / 127.5 - 1.0);
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("loom_data_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& rel) const { return (dir_ / rel).string(); }
  fs::path dir_;
};

// -- synthetic -----------------------------------------------------------------------------------

TEST(SyntheticDataset, DeterministicPerIndexAndSeeded) {
  const Shape shape{3, 8, 6};
  auto a = synthetic_dataset(50, shape, 5, 42);
  auto b = synthetic_dataset(50, shape, 5, 42);
  auto c = synthetic_dataset(50, shape, 5, 43);
  EXPECT_EQ(a->size(), 50);
  EXPECT_EQ(a->item_shape(), shape);
  EXPECT_EQ(a->num_classes(), 5);
  // Reading in another order gives the same items: get(i) depends only on (seed, i).
  std::vector<std::vector<float>> forward, backward(50);
  for (int64_t i = 0; i < 50; ++i) forward.push_back(item(*a, i));
  for (int64_t i = 49; i >= 0; --i) backward[size_t(i)] = item(*b, i);
  EXPECT_EQ(forward, backward);
  int differ = 0;
  for (int64_t i = 0; i < 50; ++i) differ += item(*c, i) != forward[size_t(i)];
  EXPECT_EQ(differ, 50);
  std::vector<int> counts(5, 0);
  for (int64_t i = 0; i < 50; ++i) {
    const int64_t l = label_of(*a, i);
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 5);
    ++counts[size_t(l)];
    for (float v : forward[size_t(i)]) {
      ASSERT_GE(v, -1.0f);
      ASSERT_LE(v, 1.0f);
    }
  }
  for (int n : counts) EXPECT_GT(n, 0);
  EXPECT_NE(forward[0], forward[1]);  // noise makes every example distinct
}

TEST(SyntheticDataset, ClassesAreLearnableByNearestMean) {
  auto ds = synthetic_dataset(400, {1, 8, 8}, 4, 9);
  const size_t n = 64;
  std::vector<std::vector<double>> mean(4, std::vector<double>(n, 0));
  std::vector<int> count(4, 0);
  for (int64_t i = 0; i < 200; ++i) {
    int64_t l;
    const auto x = item(*ds, i, &l);
    for (size_t k = 0; k < n; ++k) mean[size_t(l)][k] += x[k];
    ++count[size_t(l)];
  }
  for (int c = 0; c < 4; ++c)
    for (double& m : mean[size_t(c)]) m /= std::max(1, count[size_t(c)]);
  int correct = 0;
  for (int64_t i = 200; i < 400; ++i) {
    int64_t l;
    const auto x = item(*ds, i, &l);
    int best = 0;
    double best_d = 1e30;
    for (int c = 0; c < 4; ++c) {
      double d = 0;
      for (size_t k = 0; k < n; ++k) d += (x[k] - mean[size_t(c)][k]) * (x[k] - mean[size_t(c)][k]);
      if (d < best_d) best_d = d, best = c;
    }
    correct += best == l;
  }
  EXPECT_GE(correct, 190);  // held-out accuracy of a nearest-class-mean classifier
}

TEST(SyntheticDataset, BadArguments) {
  expect_error([] { synthetic_dataset(0, {1, 2, 2}, 2, 0); }, {"[data] synthetic", "size"});
  expect_error([] { synthetic_dataset(4, {2, 2}, 2, 0); }, {"[data] synthetic", "[2, 2]"});
  expect_error([] { synthetic_dataset(4, {1, 0, 2}, 2, 0); }, {"item_shape"});
  expect_error([] { synthetic_dataset(4, {1, 2, 2}, 0, 0); }, {"num_classes"});
  auto ds = synthetic_dataset(4, {1, 2, 2}, 2, 0);
  expect_error([&] { item(*ds, 4); }, {"index 4 out of range"});
}

// -- Fashion-MNIST -------------------------------------------------------------------------------

TEST(FashionMnistDataset, MapsPixelsToSymmetricRange) {
  const std::string dir = default_fashion_mnist_dir();
  if (!fs::is_regular_file(fs::path(dir) / "t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not found in " << dir;
  auto ds = fashion_mnist_dataset(dir, false, 64);
  const ImageDataset raw = load_fashion_mnist(dir, false, 64);
  EXPECT_EQ(ds->size(), 64);
  EXPECT_EQ(ds->item_shape(), (Shape{1, 28, 28}));
  EXPECT_EQ(ds->num_classes(), 10);
  const auto want = raw.images.to_vector<float>();
  const auto labels = raw.labels.to_vector<int64_t>();
  float lo = 1, hi = -1;
  for (int64_t i = 0; i < 64; ++i) {
    int64_t l;
    const auto x = item(*ds, i, &l);
    EXPECT_EQ(l, labels[size_t(i)]);
    for (size_t k = 0; k < x.size(); ++k) {
      ASSERT_FLOAT_EQ(x[k], want[size_t(i) * 784 + k] * 2 - 1);
      lo = std::min(lo, x[k]);
      hi = std::max(hi, x[k]);
    }
  }
  EXPECT_EQ(lo, -1.0f);
  EXPECT_EQ(hi, 1.0f);
  expect_error([&] { fashion_mnist_dataset("/nonexistent_loom_dir", true); },
               {"/nonexistent_loom_dir"});
}

// -- image folders -------------------------------------------------------------------------------

// Writes a PNG with the classic libpng API so any colour type and bit depth can be produced.
// `rows` holds the raw scanlines libpng expects (16-bit samples big-endian).
void write_png(const std::string& path, int width, int height, int color_type, int bit_depth,
               const std::vector<uint8_t>& rows, const std::vector<png_color>& palette = {},
               const std::vector<uint8_t>& trns = {}) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    FAIL() << "libpng failed writing " << path;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, png_uint_32(width), png_uint_32(height), bit_depth, color_type,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) png_set_PLTE(png, info, palette.data(), int(palette.size()));
  if (!trns.empty()) png_set_tRNS(png, info, trns.data(), int(trns.size()), nullptr);
  png_write_info(png, info);
  const size_t stride = rows.size() / size_t(height);
  for (int y = 0; y < height; ++y)
    png_write_row(png, const_cast<png_bytep>(rows.data() + size_t(y) * stride));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

class ImageFolder : public TempDir {};

TEST_F(ImageFolder, DecodesCropsAndResizes) {
  fs::create_directories(path("b_rgb"));
  fs::create_directories(path("a_gray"));
  fs::create_directories(path("c_misc"));
  // Gray 8-bit, 2 wide x 6 tall: the centred 2x2 crop is rows 2..3, enlarged 2x to 4x4.
  std::vector<uint8_t> gray(12);
  for (int k = 0; k < 12; ++k) gray[size_t(k)] = uint8_t(20 * k);
  write_png(path("a_gray/0.png"), 2, 6, PNG_COLOR_TYPE_GRAY, 8, gray);
  // RGB 8-bit 8x8, shrunk 2x: each output pixel is the mean of a 2x2 block.
  std::vector<uint8_t> rgb(8 * 8 * 3);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x)
      for (int c = 0; c < 3; ++c)
        rgb[size_t((y * 8 + x) * 3 + c)] = uint8_t(y * 30 + x * 3 + c * 7);
  write_png(path("b_rgb/img.PNG"), 8, 8, PNG_COLOR_TYPE_RGB, 8, rgb);
  std::ofstream(path("b_rgb/notes.txt")) << "ignored";
  std::ofstream(path(".hidden_dir_marker"));
  fs::create_directories(path(".cache"));  // hidden: not a class
  // Palette 4x4 with one transparent entry (composited onto black).
  std::vector<png_color> pal = {{255, 0, 0}, {0, 255, 0}, {10, 20, 30}};
  std::vector<uint8_t> idx(16);
  for (int k = 0; k < 16; ++k) idx[size_t(k)] = uint8_t(k % 3);
  write_png(path("c_misc/1_palette.png"), 4, 4, PNG_COLOR_TYPE_PALETTE, 8, idx, pal, {255, 255, 0});
  // 16-bit gray 4x4: the high byte is kept (sRGB-encoded data, no gAMA chunk).
  std::vector<uint8_t> g16(4 * 4 * 2);
  for (int k = 0; k < 16; ++k) {
    const uint16_t v = uint16_t(k * 4369);  // 0, 0x1111, ..., 0xffff
    g16[size_t(2 * k)] = uint8_t(v >> 8);
    g16[size_t(2 * k + 1)] = uint8_t(v & 0xff);
  }
  write_png(path("c_misc/2_gray16.png"), 4, 4, PNG_COLOR_TYPE_GRAY, 16, g16);
  // RGBA 4x4, opaque left half, fully transparent right half.
  std::vector<uint8_t> rgba(4 * 4 * 4);
  for (int k = 0; k < 16; ++k) {
    rgba[size_t(4 * k)] = 200, rgba[size_t(4 * k + 1)] = 100, rgba[size_t(4 * k + 2)] = 50;
    rgba[size_t(4 * k + 3)] = (k % 4) < 2 ? 255 : 0;
  }
  write_png(path("c_misc/3_rgba.png"), 4, 4, PNG_COLOR_TYPE_RGBA, 8, rgba);

  auto ds = image_folder_dataset(dir_.string(), 4, 3);
  ASSERT_EQ(ds->size(), 5);
  EXPECT_EQ(ds->num_classes(), 3);
  EXPECT_EQ(ds->item_shape(), (Shape{3, 4, 4}));
  const std::vector<int64_t> want_labels = {0, 1, 2, 2, 2};
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(label_of(*ds, i), want_labels[size_t(i)]);

  auto at = [](const std::vector<float>& x, int c, int y, int xx) {
    return x[size_t((c * 4 + y) * 4 + xx)];
  };
  const auto g = item(*ds, 0);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x)
        EXPECT_NEAR(at(g, c, y, x), to_unit(20 * ((2 + y / 2) * 2 + x / 2)), 1e-5);

  const auto r = item(*ds, 1);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) {
        double sum = 0;
        for (int dy = 0; dy < 2; ++dy)
          for (int dx = 0; dx < 2; ++dx) sum += (2 * y + dy) * 30 + (2 * x + dx) * 3 + c * 7;
        EXPECT_NEAR(at(r, c, y, x), to_unit(sum / 4), 1e-5);
      }

  const auto p = item(*ds, 2);
  for (int k = 0; k < 16; ++k) {
    const int e = k % 3;
    const double want[3][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 0}};
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(at(p, c, k / 4, k % 4), to_unit(want[e][c]), 1e-5);
  }

  const auto h = item(*ds, 3);
  for (int k = 0; k < 16; ++k)
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(at(h, c, k / 4, k % 4), to_unit(k * 17), 1e-5);

  const auto a = item(*ds, 4);
  for (int k = 0; k < 16; ++k) {
    const bool opaque = (k % 4) < 2;
    const double want[3] = {200, 100, 50};
    for (int c = 0; c < 3; ++c)
      EXPECT_NEAR(at(a, c, k / 4, k % 4), to_unit(opaque ? want[c] : 0), 1e-5);
  }
}

TEST_F(ImageFolder, LumaAndFractionalAreaResize) {
  fs::create_directories(path("only"));
  // RGB 3x3 shrunk to 2x2: output cell 0 covers source pixel 0 fully and 1 by half, so the
  // weights along each axis are (2/3, 1/3) and (1/3, 2/3).
  std::vector<uint8_t> rgb(3 * 3 * 3);
  std::vector<double> luma(9);
  for (int k = 0; k < 9; ++k) {
    const uint8_t R = uint8_t(25 * k), G = uint8_t(250 - 20 * k), B = uint8_t(13 * k + 7);
    rgb[size_t(3 * k)] = R, rgb[size_t(3 * k + 1)] = G, rgb[size_t(3 * k + 2)] = B;
    luma[size_t(k)] = 0.299 * R + 0.587 * G + 0.114 * B;
  }
  write_png(path("only/x.png"), 3, 3, PNG_COLOR_TYPE_RGB, 8, rgb);
  auto ds = image_folder_dataset(dir_.string(), 2, 1);
  EXPECT_EQ(ds->item_shape(), (Shape{1, 2, 2}));
  const auto x = item(*ds, 0);
  const double w[2][3] = {{2.0 / 3, 1.0 / 3, 0}, {0, 1.0 / 3, 2.0 / 3}};
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      double v = 0;
      for (int y = 0; y < 3; ++y)
        for (int xx = 0; xx < 3; ++xx) v += w[i][y] * w[j][xx] * luma[size_t(y * 3 + xx)];
      EXPECT_NEAR(x[size_t(i * 2 + j)], to_unit(v), 1e-5) << i << "," << j;
    }
  // Enlarging 3x3 -> 5x5 (no integer factor): cells inside one source pixel copy it, cells on a
  // border blend the two pixels by coverage.
  auto big = image_folder_dataset(dir_.string(), 5, 1);
  const auto z = item(*big, 0);
  const double w5[5][3] = {
      {1, 0, 0}, {2.0 / 3, 1.0 / 3, 0}, {0, 1, 0}, {0, 1.0 / 3, 2.0 / 3}, {0, 0, 1}};
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) {
      double v = 0;
      for (int y = 0; y < 3; ++y)
        for (int xx = 0; xx < 3; ++xx) v += w5[i][y] * w5[j][xx] * luma[size_t(y * 3 + xx)];
      EXPECT_NEAR(z[size_t(i * 5 + j)], to_unit(v), 1e-5) << i << "," << j;
    }
}

TEST_F(ImageFolder, Errors) {
  expect_error([&] { image_folder_dataset(path("missing"), 8, 3); },
               {path("missing"), "no such folder"});
  expect_error([&] { image_folder_dataset(dir_.string(), 8, 3); },
               {dir_.string(), "no class folders"});
  fs::create_directories(path("cls"));
  std::ofstream(path("cls/readme.txt")) << "x";
  expect_error([&] { image_folder_dataset(dir_.string(), 8, 3); }, {path("cls"), "no PNG files"});

  std::vector<uint8_t> gray(16 * 16, 128);
  write_png(path("cls/good.png"), 16, 16, PNG_COLOR_TYPE_GRAY, 8, gray);
  expect_error([&] { image_folder_dataset(dir_.string(), 0, 3); }, {"image_size"});
  expect_error([&] { image_folder_dataset(dir_.string(), 8, 2); }, {"channels"});

  std::ofstream(path("cls/fake.png")) << "this is not a png file at all";
  expect_error([&] { image_folder_dataset(dir_.string(), 8, 3); }, {path("cls/fake.png")});
  fs::remove(path("cls/fake.png"));

  // Pixel data cut short: the header reads fine, decoding fails in get() and names the file.
  write_png(path("cls/truncated.png"), 16, 16, PNG_COLOR_TYPE_GRAY, 8, gray);
  fs::resize_file(path("cls/truncated.png"), fs::file_size(path("cls/truncated.png")) - 20);
  auto ds = image_folder_dataset(dir_.string(), 8, 3);
  ASSERT_EQ(ds->size(), 2);
  item(*ds, 0);
  expect_error([&] { item(*ds, 1); }, {path("cls/truncated.png"), "corrupt PNG"});
  // Through a loader the same error reaches next().
  DataLoader loader(ds, {.batch_size = 2});
  expect_error([&] { loader.next(); }, {path("cls/truncated.png")});
}

// -- tensor files --------------------------------------------------------------------------------

class TensorFile : public TempDir {};

TEST_F(TensorFile, RoundTripAllDtypes) {
  const int64_t n = 6;
  const Shape shape{n, 2, 3, 2};
  std::vector<float> values(size_t(numel_of(shape)));
  for (size_t k = 0; k < values.size(); ++k)
    values[k] = float(k) * 0.25f - 3.0f;  // exact in 16 bits
  const std::vector<int64_t> labels = {3, 0, 1, 3, 2, 0};
  for (DType ld : {DType::f32, DType::bf16, DType::f16})
    for (DType lab : {DType::i32, DType::i64}) {
      const std::string file = path("latents.safetensors");
      save_safetensors(file, {{"extra", zeros({2})},
                              {"labels", from_vector(labels, {n}, lab)},
                              {"latents", from_vector(values, shape, ld)}});
      auto ds = tensor_file_dataset(file);
      ASSERT_EQ(ds->size(), n);
      EXPECT_EQ(ds->item_shape(), (Shape{2, 3, 2}));
      EXPECT_EQ(ds->num_classes(), 4);
      for (int64_t i = 0; i < n; ++i) {
        int64_t l;
        const auto x = item(*ds, i, &l);
        EXPECT_EQ(l, labels[size_t(i)]);
        EXPECT_EQ(x, std::vector<float>(values.begin() + i * 12, values.begin() + (i + 1) * 12))
            << dtype_name(ld) << " item " << i;
      }
    }
  save_safetensors(path("meta.safetensors"),
                   {{"latents", from_vector(values, shape)}, {"labels", from_vector(labels, {n})}},
                   {{"num_classes", "10"}});
  EXPECT_EQ(tensor_file_dataset(path("meta.safetensors"))->num_classes(), 10);
}

TEST_F(TensorFile, Errors) {
  const Tensor lat = zeros({4, 1, 2, 2});
  const Tensor lab = from_vector(std::vector<int64_t>{0, 1, 2, 1}, {4});
  auto check = [&](const std::vector<std::pair<std::string, Tensor>>& tensors,
                   const std::map<std::string, std::string>& meta, const std::string& msg) {
    const std::string file = path("bad.safetensors");
    save_safetensors(file, tensors, meta);
    expect_error([&] { tensor_file_dataset(file); }, {file, msg});
  };
  check({{"labels", lab}}, {}, "no tensor named \"latents\"");
  check({{"latents", lat}}, {}, "no tensor named \"labels\"");
  check({{"latents", zeros({4, 4})}, {"labels", lab}}, {}, "[N, C, H, W]");
  check({{"latents", zeros({4, 1, 2, 2}, DType::f64)}, {"labels", lab}}, {}, "f64");
  check({{"latents", lat}, {"labels", lab.to(DType::f32)}}, {}, "i32 or i64");
  check({{"latents", lat}, {"labels", lab.reshape({2, 2})}}, {}, "must be [N]");
  check({{"latents", zeros({3, 1, 2, 2})}, {"labels", lab}}, {}, "3 examples");
  check({{"latents", zeros({0, 1, 2, 2})}, {"labels", zeros({0}, DType::i64)}}, {}, "no examples");
  check({{"latents", zeros({4, 1, 0, 2})}, {"labels", lab}}, {}, "empty dimension");
  check({{"latents", lat}, {"labels", from_vector(std::vector<int64_t>{0, -2, 1, 1}, {4})}}, {},
        "label -2 of example 1");
  check({{"latents", lat}, {"labels", lab}}, {{"num_classes", "2"}}, "label 2 is out of range");
  check({{"latents", lat}, {"labels", lab}}, {{"num_classes", "3x"}}, "positive integer");
  check({{"latents", lat}, {"labels", lab}}, {{"num_classes", "0"}}, "positive integer");
  expect_error([&] { tensor_file_dataset(path("absent.safetensors")); },
               {path("absent.safetensors")});
}

}  // namespace
}  // namespace loom::data
