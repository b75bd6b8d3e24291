#pragma once
// Muon: momentum orthogonalized by a Newton–Schulz iteration, for matrix-shaped parameters
// (ALGORITHMS.md §8.1, the reference muon.py update), in f32 on the CPU:
//
//   m = beta * m + (1 - beta) * g                  (EMA momentum, zero at a parameter's first step)
//   u = (1 - beta) * g + beta * m   (nesterov)  or  u = m
//   O = NS5(u)                                     (per matrix, below)
//   p = p * (1 - lr * weight_decay)                (decoupled decay, before the update)
//   p = p - lr * scale(rows, cols) * O
//
// Matrices: a 2-D parameter [rows, cols] is one matrix; a 3-D parameter [n, rows, cols] is a stack
// of n independent matrices (MoE experts [E, out, in]), each orthogonalized and scaled on its own;
// a parameter of rank >= 4 (a conv weight [out, in, kh, kw]) is flattened to [out, in*kh*kw].
// Parameters of rank < 2 are rejected at construction: they belong in an AdamW group.
//
// Scale: rows_cols is the reference sqrt(max(1, rows / cols)); moonlight is Moonlight's
// 0.2 * sqrt(max(rows, cols)) (§8.3), which makes the update's RMS about 0.2 * lr, like AdamW's.
// rows and cols are those of the matrix that is orthogonalized (for a flattened conv weight the
// reference uses kh / kw instead, a quirk this class does not copy).
//
// NS5 (newton_schulz): X = G / (||G||_F + 1e-7), then `steps` times A = X Xᵀ,
// X = a X + (b A + c A A) X with (a, b, c) = (3.4445, -4.7750, 2.0315). It runs on the wide
// orientation (a tall G is transposed first and the result transposed back), so
// newton_schulz(Gᵀ) == newton_schulz(G)ᵀ bitwise. Singular values map to about [0.68, 1.13], not
// exactly 1. On the CPU everything is f32; on CUDA the iteration runs in bf16 like the reference.
//
// State: one momentum buffer per parameter, f32 and shaped like it, undefined until the
// parameter's first step; exposed for checkpoints. The step count is not needed (no bias
// correction).
//
// Split matrices (tensor parallelism, docs/PARALLEL.md): a parameter may hold only this rank's
// slice of a larger matrix. NS5 of a slice is not the slice of NS5 of the matrix, so for a
// parameter listed in MuonConfig::splits (by Tensor::name) step() gathers u to the whole matrix,
// orthogonalizes and scales it as the whole (the single-rank arithmetic, repeated on every rank of
// the split's group) and applies this rank's slice of the result; momentum and weight decay stay
// on the slice. gather is collective over the split's group, so every rank of that group must step
// the same split parameters in the same order: the ranks of a tensor-parallel group do (their
// slices have equal shapes, so a ShardedOptimizer gives them the same plan, and whole units keep
// their parameter's name).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace loom::optim {

enum class MuonScale { rows_cols, moonlight };

// "rows_cols" or "moonlight"; throws loom::Error naming the accepted values otherwise.
MuonScale muon_scale_from_name(const std::string& name);
const char* muon_scale_name(MuonScale scale);
// The update multiplier for one rows x cols matrix.
double muon_scale_factor(MuonScale scale, int64_t rows, int64_t cols);

// How Muon sees a parameter of rank >= 2 as matrices: `count` matrices of rows x cols stored one
// after another ([n, r, c] -> n of r x c; rank 2 or >= 4 -> one of shape[0] x the rest).
struct MuonMatrices {
  int64_t count, rows, cols;
};
MuonMatrices muon_matrices(const Shape& shape);

// Multiply-add FLOPs (2 per multiply-add) of newton_schulz on one rows x cols matrix: per step,
// on the wide orientation r = min(rows, cols) <= c = max(rows, cols),
//   A = X Xᵀ: 2 r r c,   A A: 2 r r r,   (b A + c A A) X: 2 r r c   ->  4 r^2 c + 2 r^3,
// times `steps` (the elementwise work and the normalization are not counted).
int64_t newton_schulz_flops(int64_t rows, int64_t cols, int64_t steps);

// NS5 of a 2-D tensor (any float dtype, any strides); returns a new contiguous f32 [rows, cols]
// tensor. Throws for a tensor that is not 2-D or steps < 0.
Tensor newton_schulz(const Tensor& g, int64_t steps = 5);

// How a parameter that holds a slice of a matrix relates to the whole (see above).
struct MuonSplit {
  std::function<Tensor(const Tensor&)> gather;  // this rank's slice -> the whole (collective)
  std::function<Tensor(const Tensor&)> slice;   // the whole -> this rank's slice
};
// Split parameters by name; a parameter not listed is a whole matrix.
using MuonSplits = std::map<std::string, MuonSplit>;

struct MuonConfig {
  double lr = 0.02;
  double momentum = 0.95;
  bool nesterov = true;
  double weight_decay = 0;
  int64_t ns_steps = 5;
  MuonScale scale = MuonScale::rows_cols;
  std::shared_ptr<const MuonSplits> splits = nullptr;  // null: every parameter is whole
};

class Muon final : public Optimizer {
 public:
  // Throws loom::Error for lr < 0, momentum outside [0, 1), weight_decay < 0, ns_steps < 1, or a
  // parameter of rank < 2 (named).
  explicit Muon(std::vector<Tensor> params, const MuonConfig& config = {});

  void step() override;
  // One tensor kind, "muon_momentum".
  StateKinds state_kinds(size_t i) const override;
  std::vector<ParamState> state() const override;
  void load_state(const std::vector<ParamState>& state) override;

  const MuonConfig& config() const { return config_; }
  // Parameter i's momentum buffer; undefined until its first step.
  const Tensor& momentum_buffer(size_t i) const { return buffers_.at(i); }
  // Restores parameter i's momentum buffer (checkpoint loading). A defined buffer must match the
  // parameter's shape and is copied into a fresh contiguous f32 tensor; an undefined one clears
  // the buffer, so the next step starts from zero momentum.
  void set_momentum_buffer(size_t i, const Tensor& buffer);

 private:
  // Parameter i's entry in config_.splits, or nullptr for a whole matrix.
  const MuonSplit* split_of(size_t i) const;
  // NS5 of u per matrix (gathered and sliced back for a split parameter), f32 shaped like u, and
  // the step size lr * scale through *step.
  Tensor orthogonalized(size_t i, const Tensor& u, float* step) const;

  MuonConfig config_;
  std::vector<Tensor> buffers_;
};

}  // namespace loom::optim
