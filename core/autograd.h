#pragma once
// Define-by-run reverse-mode autograd.
//
// An Op computes outputs from inputs (forward) and input gradients from output gradients
// (backward). `apply_op` runs the forward and, when grad mode is on and an input requires grad,
// records a Node that keeps the op, the tensors its backward reads (detached, so no cycles), and
// edges to the producers of its inputs. `Tensor::backward` walks the recorded graph in dependency
// order. Backward is written with ops and runs with grad mode off, so it works on any device.
//
// Gradient conventions: parameter (leaf) gradients accumulate into `.grad` (+=), in place when
// `.grad` already exists, so a pre-allocated flat gradient buffer keeps receiving them; after a
// leaf received every contribution of a pass its hooks run (the data-parallel reducer uses this).
// Unless retain_graph is set, each node frees its saved tensors once it ran; running backward
// through it again is an error.
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace loom {

// What an op's backward may read.
struct SavedContext {
  std::vector<Tensor> inputs;   // detached inputs (undefined unless Op::saves_input(i))
  std::vector<Tensor> outputs;  // detached outputs (undefined unless Op::saves_outputs())
  std::vector<Shape> input_shapes;
  std::vector<DType> input_dtypes;
  std::vector<bool> needs_grad;  // per input: does anything upstream want this gradient
};

class Op {
 public:
  virtual ~Op() = default;
  virtual const char* name() const = 0;
  // Computes the outputs. Runs with grad mode off; inputs are as given (maybe non-contiguous).
  virtual std::vector<Tensor> forward(const std::vector<Tensor>& inputs) = 0;
  // One gradient per input, shaped like that input; undefined where !needs_grad[i] or the input
  // is not differentiable (indices, masks). grad_outputs are all defined (zeros where unused).
  virtual std::vector<Tensor> backward(const SavedContext& ctx,
                                       const std::vector<Tensor>& grad_outputs) = 0;
  virtual bool saves_inputs() const { return true; }
  // Per-input refinement (e.g. an index op keeps only its index alive).
  virtual bool saves_input(int index) const {
    (void)index;
    return saves_inputs();
  }
  virtual bool saves_outputs() const { return false; }
  // Outputs that never carry gradient (indices of topk, masks). Default: non-floating outputs.
  virtual bool output_differentiable(int index, DType dtype) const {
    (void)index;
    return is_floating(dtype);
  }
};

struct Edge {
  std::shared_ptr<Node> fn;          // producer of the input, or
  std::shared_ptr<TensorImpl> leaf;  // the leaf that accumulates, or neither (no gradient)
  int output_nr = 0;
};

class Node {
 public:
  std::shared_ptr<Op> op;
  SavedContext saved;
  std::vector<Edge> next;  // one per input
  std::vector<Shape> output_shapes;
  std::vector<DType> output_dtypes;
  std::vector<Device> output_devices;
  bool released = false;
};

// Runs `op` on `inputs` and records it for autograd when needed.
std::vector<Tensor> apply_op(const std::shared_ptr<Op>& op, const std::vector<Tensor>& inputs);

template <class O, class... Args>
std::vector<Tensor> apply(const std::vector<Tensor>& inputs, Args&&... args) {
  return apply_op(std::make_shared<O>(std::forward<Args>(args)...), inputs);
}

// Runs backward from `root` with gradient `seed` (same shape as root).
void run_backward(const Tensor& root, const Tensor& seed, bool retain_graph);

// Adds src into dst in place without recording (dst += src); shapes must match.
void accumulate_into(const Tensor& dst, const Tensor& src);

}  // namespace loom
