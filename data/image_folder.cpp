#include <png.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <vector>

#include "data/dataset.h"

namespace loom::data {

namespace {

namespace fs = std::filesystem;

bool is_png_name(const std::string& name) {
  if (name.size() < 4) return false;
  std::string ext = name.substr(name.size() - 4);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".png";
}

// Lists a folder, turning filesystem errors (permissions, races) into loom::Error naming it.
std::vector<fs::directory_entry> list_folder(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::directory_entry> out;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    out.push_back(*it);
  LOOM_CHECK(!ec, "[data] ", dir.string(), ": cannot list folder: ", ec.message());
  return out;
}

bool is_hidden(const fs::path& p) {
  return p.filename().string().starts_with('.');
}

// The simplified API keeps libpng's setjmp error handling inside libpng, so no longjmp ever
// crosses our C++ frames; failures come back as a return code plus image.message.
struct PngHeader {
  png_image image;
  explicit PngHeader(const std::string& path) {
    std::memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    LOOM_CHECK(png_image_begin_read_from_file(&image, path.c_str()) != 0, "[data] ", path,
               ": not a readable PNG: ", image.message);
  }
  ~PngHeader() { png_image_free(&image); }
  PngHeader(const PngHeader&) = delete;
  PngHeader& operator=(const PngHeader&) = delete;
};

struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // [height, width, 3] sRGB
};

RgbImage decode_png(const std::string& path) {
  PngHeader header(path);
  png_image& image = header.image;
  // Without this libpng would treat 16-bit data lacking a gAMA chunk as linear light and
  // brighten it on the way to 8-bit sRGB; almost every such file is really sRGB-encoded.
  image.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
  image.format = PNG_FORMAT_RGB;
  RgbImage out;
  out.width = image.width;
  out.height = image.height;
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  const png_color black = {0, 0, 0};
  LOOM_CHECK(png_image_finish_read(&image, &black, out.pixels.data(), 0, nullptr) != 0, "[data] ",
             path, ": corrupt PNG: ", image.message);
  return out;
}

// For output cell j of a resampling from n source pixels to s output pixels, the source pixels
// it covers and their weights. Positions are counted in units of 1/(n*s) of the whole extent so
// overlaps are exact integers: source pixel k spans [k*s, (k+1)*s), output cell j spans
// [j*n, (j+1)*n).
struct Tap {
  int64_t src;
  float weight;
};

std::vector<std::vector<Tap>> area_taps(int64_t n, int64_t s) {
  std::vector<std::vector<Tap>> taps(static_cast<size_t>(s));
  for (int64_t j = 0; j < s; ++j) {
    const int64_t lo = j * n, hi = (j + 1) * n;
    for (int64_t k = lo / s; k < n && k * s < hi; ++k) {
      const int64_t overlap = std::min(hi, (k + 1) * s) - std::max(lo, k * s);
      if (overlap > 0) taps[size_t(j)].push_back({k, float(double(overlap) / double(n))});
    }
  }
  return taps;
}

class ImageFolderDataset : public Dataset {
 public:
  struct Entry {
    std::string path;
    int64_t label;
  };

  ImageFolderDataset(std::vector<Entry> entries, int64_t num_classes, int64_t image_size,
                     int64_t channels)
      : entries_(std::move(entries)),
        num_classes_(num_classes),
        image_size_(image_size),
        channels_(channels) {}

  int64_t size() const override { return int64_t(entries_.size()); }
  Shape item_shape() const override { return {channels_, image_size_, image_size_}; }
  int64_t num_classes() const override { return num_classes_; }

  void get(int64_t index, float* image_out, int64_t* label_out) const override {
    LOOM_CHECK(index >= 0 && index < size(), "[data] image folder: index ", index,
               " out of range for a dataset of ", size(), " items");
    const Entry& e = entries_[size_t(index)];
    const RgbImage img = decode_png(e.path);
    const int64_t side = std::min(img.width, img.height);
    const int64_t y0 = (img.height - side) / 2, x0 = (img.width - side) / 2;
    const int64_t S = image_size_;
    const auto taps = area_taps(side, S);

    std::vector<float> plane(size_t(side * side)), rows(size_t(side * S));
    for (int64_t c = 0; c < channels_; ++c) {
      for (int64_t y = 0; y < side; ++y) {
        const uint8_t* px = img.pixels.data() + ((y0 + y) * img.width + x0) * 3;
        float* dst = &plane[size_t(y * side)];
        for (int64_t x = 0; x < side; ++x, px += 3)
          dst[x] =
              channels_ == 1 ? float(0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]) : float(px[c]);
      }
      // Separable: shrink each row to S columns, then each column to S rows.
      for (int64_t y = 0; y < side; ++y)
        for (int64_t j = 0; j < S; ++j) {
          float acc = 0;
          for (const Tap& t : taps[size_t(j)]) acc += t.weight * plane[size_t(y * side + t.src)];
          rows[size_t(y * S + j)] = acc;
        }
      float* out = image_out + c * S * S;
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < S; ++j) {
          float acc = 0;
          for (const Tap& t : taps[size_t(i)]) acc += t.weight * rows[size_t(t.src * S + j)];
          out[i * S + j] = acc / 127.5f - 1.0f;
        }
    }
    *label_out = e.label;
  }

 private:
  std::vector<Entry> entries_;
  int64_t num_classes_, image_size_, channels_;
};

}  // namespace

std::shared_ptr<Dataset> image_folder_dataset(const std::string& root, int64_t image_size,
                                              int64_t channels) {
  LOOM_CHECK(image_size >= 1, "[data] ", root, ": image_size must be positive, got ", image_size);
  LOOM_CHECK(channels == 1 || channels == 3, "[data] ", root, ": channels must be 1 or 3, got ",
             channels);
  std::error_code ec;
  LOOM_CHECK(fs::is_directory(root, ec), "[data] ", root, ": no such folder");

  std::vector<fs::path> class_dirs;
  for (const auto& d : list_folder(root))
    if (d.is_directory() && !is_hidden(d.path())) class_dirs.push_back(d.path());
  LOOM_CHECK(!class_dirs.empty(), "[data] ", root,
             ": no class folders (expected root/<class>/<image>.png)");
  std::sort(class_dirs.begin(), class_dirs.end(), [](const fs::path& a, const fs::path& b) {
    return a.filename().string() < b.filename().string();
  });

  std::vector<ImageFolderDataset::Entry> entries;
  for (size_t label = 0; label < class_dirs.size(); ++label) {
    std::vector<std::string> files;
    for (const auto& f : list_folder(class_dirs[label]))
      if (f.is_regular_file() && !is_hidden(f.path()) && is_png_name(f.path().filename().string()))
        files.push_back(f.path().string());
    LOOM_CHECK(!files.empty(), "[data] ", class_dirs[label].string(),
               ": class folder holds no PNG files");
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      PngHeader check(f);  // throws naming the file when its header is unreadable
      entries.push_back({std::move(f), int64_t(label)});
    }
  }
  return std::make_shared<ImageFolderDataset>(std::move(entries), int64_t(class_dirs.size()),
                                              image_size, channels);
}

}  // namespace loom::data
