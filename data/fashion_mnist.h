#pragma once
// Fashion-MNIST from its IDX files, as Debian's dataset-fashion-mnist package installs them in
// /usr/share/datasets/fashion-mnist/: {train,t10k}-images-idx3-ubyte.gz and
// {train,t10k}-labels-idx1-ubyte.gz (gzip; plain uncompressed IDX files are read as well).
//
// Contract: the image file must start with magic 0x00000803 and dims [N, 28, 28], the label file
// with magic 0x00000801 and dim [N], both counts equal, every label in 0..9, and each file must
// hold exactly the bytes its header announces (checked fully when the whole set is loaded; with a
// `limit` only the first `limit` records are read and checked). Any violation throws loom::Error
// naming the file and the offending value. Loading is single-threaded and takes well under a
// second for the 60000 training images.
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace loom::data {

struct ImageDataset {
  Tensor images;  // [N, 1, 28, 28] f32, pixel / 255 in [0, 1]
  Tensor labels;  // [N] i64 class ids in 0..9
};

// Loads the training split (train = true, 60000 images) or the test split (10000 images) from
// `dir`. limit >= 0 keeps only the first `limit` images (all when the split has fewer).
ImageDataset load_fashion_mnist(const std::string& dir, bool train, int64_t limit = -1);

// $LOOM_FASHION_MNIST_DIR when set and non-empty, else /usr/share/datasets/fashion-mnist.
std::string default_fashion_mnist_dir();

}  // namespace loom::data
