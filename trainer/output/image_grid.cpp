#include "trainer/output/image_grid.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/shape.h"
#include "trainer/output/atomic_write.h"

namespace loom::trainer {

namespace {

// libpng's readers refuse images wider or taller than this by default, so a larger grid would
// be a file nobody can open.
constexpr int64_t kMaxSide = 1000000;

uint8_t to_byte(float v) {
  if (std::isnan(v)) return 0;
  const float x = std::clamp((v + 1.0f) * 127.5f, 0.0f, 255.0f);
  return uint8_t(std::lround(x));
}

}  // namespace

void save_png(const std::string& path, const Tensor& images, int64_t nrow, int64_t padding) {
  LOOM_CHECK(images.defined(), "[png] ", path, ": undefined tensor");
  LOOM_CHECK(images.dim() == 4, "[png] ", path, ": expected images [N, C, H, W], got ",
             shape_str(images.shape()));
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  LOOM_CHECK(c == 1 || c == 3, "[png] ", path, ": expected 1 or 3 channels, got ",
             shape_str(images.shape()));
  LOOM_CHECK(n > 0 && h > 0 && w > 0, "[png] ", path, ": no pixels in ", shape_str(images.shape()));
  LOOM_CHECK(is_floating(images.dtype()), "[png] ", path, ": expected floating images, got ",
             dtype_name(images.dtype()));
  LOOM_CHECK(nrow >= 1, "[png] ", path, ": nrow must be >= 1, got ", nrow);
  LOOM_CHECK(padding >= 0, "[png] ", path, ": padding must be >= 0, got ", padding);

  const int64_t cols = std::min(n, nrow), rows = (n + nrow - 1) / nrow;
  const int64_t grid_w = cols * (w + padding) + padding, grid_h = rows * (h + padding) + padding;
  LOOM_CHECK(grid_w <= kMaxSide && grid_h <= kMaxSide, "[png] ", path, ": grid ", grid_w, "x",
             grid_h, " exceeds ", kMaxSide, " pixels per side");

  std::vector<float> src;
  {
    NoGradGuard no_grad;
    src = images.detach().to(Device::cpu()).to_vector<float>();
  }
  std::vector<uint8_t> pixels(size_t(grid_w * grid_h * c), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y0 = padding + (i / nrow) * (h + padding);
    const int64_t x0 = padding + (i % nrow) * (w + padding);
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          pixels[size_t(((y0 + y) * grid_w + x0 + x) * c + ch)] =
              to_byte(src[size_t(((i * c + ch) * h + y) * w + x)]);
  }

  // The simplified API reports errors through its return value instead of libpng's longjmp,
  // which would skip C++ destructors.
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = png_uint_32(grid_w);
  image.height = png_uint_32(grid_h);
  image.format = c == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  const png_int_32 stride = png_int_32(grid_w * c);
  png_alloc_size_t size = 0;
  LOOM_CHECK(png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data(), stride, nullptr),
             "[png] ", path, ": encoding failed: ", image.message);
  std::string bytes(size, '\0');
  const int ok =
      png_image_write_to_memory(&image, bytes.data(), &size, 0, pixels.data(), stride, nullptr);
  png_image_free(&image);
  LOOM_CHECK(ok, "[png] ", path, ": encoding failed: ", image.message);
  bytes.resize(size);
  write_file_atomic(path, bytes, "png");
}

}  // namespace loom::trainer
