#pragma once
// Reading and writing the safetensors format (the layout Hugging Face and PyTorch tools share):
// an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
// {"dtype": "F32"|"F64"|"BF16"|"F16"|"I32"|"I64"|"BOOL", "shape": [...], "data_offsets":
// [begin, end]} plus an optional "__metadata__" object of string values, then the raw
// little-endian bytes of every tensor, row-major, offsets counted from the end of the header.
//
// save_safetensors writes tensors in the given order (non-contiguous views and CUDA tensors are
// copied to contiguous host memory first), pads the header with spaces so the data starts
// 8-byte aligned, and writes to `path + ".tmp"`, fsyncs it, then renames it over `path`: a crash
// leaves either the old file or the complete new one. load_safetensors returns contiguous CPU
// tensors in header order. The loader accepts exactly what the format allows: every problem
// (missing or truncated file, header length past the end, malformed JSON, unknown dtype, offsets
// out of range, overlapping or leaving holes, a shape that disagrees with the byte count,
// duplicate names, bool bytes other than 0/1) throws loom::Error starting with
// "[safetensors] <path>: ". Both functions assume a little-endian host.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace loom {

struct SafetensorsFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in header order
  std::map<std::string, std::string> metadata;          // the "__metadata__" object
};

// Writes `tensors` (unique, non-empty names other than "__metadata__") and `metadata` to `path`
// atomically. Tensors are read without recording autograd history.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads a whole safetensors file into contiguous CPU tensors.
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace loom
