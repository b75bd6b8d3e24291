#pragma once
// Datasets: random access to labelled examples, each an image [C, H, W] f32 and a class id.
//
// Contract: a Dataset is immutable after construction; get(index) for 0 <= index < size() writes
// exactly numel(item_shape()) floats to image_out and one label in [0, num_classes()) to
// label_out, may be called from any thread concurrently, and returns the same values every time.
// Pixel images come out in [-1, 1]; latents come out as stored. Every factory validates its input
// up front and throws loom::Error "[data] <file>: ..." naming the offending file or folder; errors
// that can only be seen while reading an example (a PNG whose pixel data is corrupt) are thrown by
// get() and name the file as well. get() with an index out of range throws.
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace loom::data {

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Shape item_shape() const = 0;  // [C, H, W]
  virtual int64_t num_classes() const = 0;
  // Thread-safe; image_out holds numel(item_shape()) floats.
  virtual void get(int64_t index, float* image_out, int64_t* label_out) const = 0;
};

// Fashion-MNIST (data/fashion_mnist.h) held in memory: items [1, 28, 28], pixels mapped from
// [0, 1] to [-1, 1], 10 classes. limit >= 0 keeps the first `limit` images of the split.
std::shared_ptr<Dataset> fashion_mnist_dataset(const std::string& dir, bool train,
                                               int64_t limit = -1);

// PNG images in class folders: root/<class>/<image>.png. Sub-folders of root are the classes,
// in byte-wise sorted order of their names (class id = rank in that order). In each, every
// regular file whose name ends in ".png" (any case) is an example; other files, and names
// starting with '.', are ignored. Examples are ordered by class, then by file name. The factory
// reads each file's PNG header (a non-PNG or a broken header is reported at once); pixels are
// decoded on get().
// Decoding: libpng's simplified API turns every PNG colour type (gray, gray+alpha, palette, RGB,
// RGBA, 1..16-bit, tRNS) into 8-bit sRGB RGB, compositing alpha onto black (in linear light, as
// libpng does). 16-bit files without a gAMA/sRGB chunk are taken as sRGB-encoded like 8-bit ones.
// channels = 1 takes the luma 0.299 R + 0.587 G + 0.114 B of the sRGB values (gray files keep
// their values); channels = 3 gives RGB (gray replicated).
// Geometry: the largest centred square is cropped (offsets rounded down), then resampled to
// image_size x image_size by area averaging: each output pixel is the mean of the source area it
// covers, partially covered source pixels weighted by their covered fraction. That is exact for
// integer factors and antialiased when shrinking; when enlarging it is nearest-neighbour with
// blended cell borders. Values v in 0..255 map to v / 127.5 - 1.
// Errors: root missing or not a folder, no class folders, a class folder without PNG files,
// image_size < 1, channels not 1 or 3, a file that is not a readable PNG (named).
std::shared_ptr<Dataset> image_folder_dataset(const std::string& root, int64_t image_size,
                                              int64_t channels);

// A safetensors file holding "latents" [N, C, H, W] (f32, bf16 or f16; returned as f32) and
// "labels" [N] (i32 or i64); other tensors are ignored. num_classes is the metadata key
// "num_classes" when present (a positive integer that must exceed every label), else the largest
// label + 1. Errors: missing tensors, wrong ranks or dtypes, N mismatch, N = 0, negative labels,
// a malformed or too small "num_classes", plus everything load_safetensors rejects.
std::shared_ptr<Dataset> tensor_file_dataset(const std::string& path);

// A learnable synthetic dataset: class c has a fixed mean image (per channel a sinusoidal
// grating with class-dependent integer frequencies, phase and amplitude, drawn from the seed) and
// example i is label_i's mean plus Gaussian noise (std 0.1), clamped to [-1, 1]. The label and
// the noise of example i are counter-based draws keyed by (seed, i), so get(i) depends only on
// (seed, i): not on the order or thread of calls. item_shape must be [C, H, W] with positive dims.
std::shared_ptr<Dataset> synthetic_dataset(int64_t size, Shape item_shape, int64_t num_classes,
                                           uint64_t seed);

// The first `count` examples (all when count < 0 or beyond size) as images [N, C, H, W] f32 and
// labels [N] i64, for evaluation on a held-out split.
void load_examples(const Dataset& dataset, int64_t count, Tensor* images, Tensor* labels);

}  // namespace loom::data
