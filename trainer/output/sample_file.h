#pragma once
// Where a batch of generated samples goes. Images (1 gray or 3 RGB channels) become a PNG grid
// (image_grid.h); anything else — latents of an autoencoder, such as DiT's 4-channel SD-VAE
// latents, which loom cannot decode — is written as a safetensors file holding the batch as
// "samples" [N, C, H, W] (f32) and the labels as "labels" [N] (i64), for the VAE decoder of the
// user's choice. Both writes are atomic.
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace loom::trainer {

// True when samples [N, C, H, W] can be shown as an image grid (C is 1 or 3).
bool is_image_batch(const Tensor& samples);

// Writes samples to `stem + ".png"` (a grid with nrow images per row) or, for latents, to
// `stem + ".safetensors"`; returns the path written.
std::string save_samples(const std::string& stem, const Tensor& samples, const Tensor& labels,
                         int64_t nrow);

}  // namespace loom::trainer
