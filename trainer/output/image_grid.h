#pragma once
// Sample grids: a batch of generated images tiled into one PNG under run_dir/samples/.
//
// save_png lays images [N, C, H, W] (any floating dtype, any device; C = 1 gray or 3 RGB) out
// row-major, `nrow` images per row (the last row may be short), with `padding` black pixels
// between images and around the border, like torchvision's make_grid: the PNG is
// (min(N, nrow) * (W + padding) + padding) wide and (ceil(N / nrow) * (H + padding) + padding)
// high. A value v in [-1, 1] becomes round((v + 1) / 2 * 255); values outside are clamped and
// NaN becomes 0. The file is written atomically (path.tmp, fsync, rename). Bad shapes or
// arguments and I/O failures throw loom::Error "[png] <path>: ...".
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace loom::trainer {

void save_png(const std::string& path, const Tensor& images, int64_t nrow, int64_t padding = 2);

}  // namespace loom::trainer
