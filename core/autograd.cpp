#include "core/autograd.h"

#include <unordered_map>

#include "core/ops/elementwise.h"
#include "core/profiler.h"

namespace loom {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() {
  return g_grad_enabled;
}
GradModeGuard::GradModeGuard(bool enabled) : prev_(g_grad_enabled) {
  g_grad_enabled = enabled;
}
GradModeGuard::~GradModeGuard() {
  g_grad_enabled = prev_;
}

std::vector<Tensor> apply_op(const std::shared_ptr<Op>& op, const std::vector<Tensor>& inputs) {
  bool needs_graph = false;
  if (g_grad_enabled) {
    for (const Tensor& t : inputs) needs_graph |= t.defined() && t.requires_grad();
  }
  std::vector<Tensor> outputs;
  {
    NoGradGuard guard;
    profiler::timed(op->name(), "forward", [&] { outputs = op->forward(inputs); });
  }
  if (!needs_graph) return outputs;

  auto node = std::make_shared<Node>();
  node->op = op;
  SavedContext& s = node->saved;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    const bool req = t.defined() && t.requires_grad();
    s.needs_grad.push_back(req);
    s.input_shapes.push_back(t.defined() ? t.shape() : Shape{});
    s.input_dtypes.push_back(t.defined() ? t.dtype() : DType::f32);
    s.inputs.push_back(op->saves_input(int(i)) && t.defined() ? t.detach() : Tensor());
    Edge e;
    if (req) {
      if (t.grad_fn()) {
        e.fn = t.grad_fn();
        e.output_nr = t.impl_ptr()->output_nr;
      } else {
        e.leaf = t.impl_shared();
      }
    }
    node->next.push_back(std::move(e));
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    Tensor& out = outputs[i];
    node->output_shapes.push_back(out.shape());
    node->output_dtypes.push_back(out.dtype());
    node->output_devices.push_back(out.device());
    if (op->saves_outputs()) s.outputs.push_back(out.detach());
    if (!op->output_differentiable(int(i), out.dtype())) continue;
    // An op may return one of its inputs (a no-op view): give the output its own impl.
    for (const Tensor& in : inputs) {
      if (in.defined() && in.same(out)) out = out.detach();
    }
    TensorImpl* impl = out.impl_ptr();
    impl->requires_grad = true;
    impl->grad_fn = node;
    impl->output_nr = int(i);
  }
  return outputs;
}

void accumulate_into(const Tensor& dst, const Tensor& src) {
  LOOM_CHECK(dst.shape() == src.shape(), "[accumulate] gradient shape ", shape_str(src.shape()),
             " does not match ", shape_str(dst.shape()));
  NoGradGuard guard;
  copy_into(dst, add(dst, src));
}

namespace {

void accumulate_leaf(const std::shared_ptr<TensorImpl>& leaf, const Tensor& g) {
  Tensor grad(leaf->grad);
  if (grad.defined()) {
    accumulate_into(grad, g.dtype() == grad.dtype() ? g : g.to(grad.dtype()));
  } else {
    leaf->grad = g.to(leaf->dtype).clone().impl_shared();
  }
  Tensor handle(leaf);
  for (auto& hook : leaf->hooks) hook(handle);
}

Tensor add_grads(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  return add(a, b);
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& seed_in, bool retain_graph) {
  NoGradGuard guard;
  Tensor seed = seed_in;
  if (!seed.defined()) {
    LOOM_CHECK(root.numel() == 1,
               "[backward] without a seed gradient the tensor must have one "
               "element, got shape ",
               shape_str(root.shape()));
    seed = ones_like(root);
  }
  LOOM_CHECK(seed.shape() == root.shape(), "[backward] seed shape ", shape_str(seed.shape()),
             " does not match tensor shape ", shape_str(root.shape()));
  LOOM_CHECK(root.requires_grad(),
             "[backward] tensor does not require grad (no parameter "
             "that requires grad was used to compute it)");
  if (!root.grad_fn()) {  // a leaf: d root / d root = seed
    accumulate_leaf(root.impl_shared(), seed);
    return;
  }

  // Count, for every node and leaf reachable from root, how many edges feed it.
  std::unordered_map<Node*, int> deps;
  std::unordered_map<TensorImpl*, int> leaf_deps;
  std::vector<Node*> stack{root.grad_fn().get()};
  deps[root.grad_fn().get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next) {
      if (e.fn) {
        auto [it, fresh] = deps.try_emplace(e.fn.get(), 0);
        ++it->second;
        if (fresh) stack.push_back(e.fn.get());
      } else if (e.leaf) {
        ++leaf_deps[e.leaf.get()];
      }
    }
  }

  std::unordered_map<Node*, std::vector<Tensor>> pending;
  std::unordered_map<TensorImpl*, Tensor> leaf_pending;
  std::shared_ptr<Node> keep_root = root.grad_fn();
  pending[keep_root.get()].resize(keep_root->output_shapes.size());
  pending[keep_root.get()][root.impl_ptr()->output_nr] = seed;

  std::vector<Node*> ready{keep_root.get()};
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    LOOM_CHECK(!n->released,
               "[backward] trying to run backward through the graph a second time "
               "(op ",
               n->op->name(),
               "): its saved tensors were freed by the first backward; "
               "pass retain_graph=true to the first call");
    std::vector<Tensor> grads = std::move(pending[n]);
    pending.erase(n);
    grads.resize(n->output_shapes.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined())
        grads[i] = zeros(n->output_shapes[i], n->output_dtypes[i], n->output_devices[i]);
    }
    std::vector<Tensor> in_grads;
    profiler::timed(n->op->name(), "backward",
                    [&] { in_grads = n->op->backward(n->saved, grads); });
    LOOM_ASSERT(in_grads.size() == n->next.size(), "op ", n->op->name(), " returned ",
                in_grads.size(), " gradients for ", n->next.size(), " inputs");
    for (size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.fn && !e.leaf) continue;
      Tensor g = in_grads[i];
      if (g.defined()) {
        LOOM_ASSERT(g.shape() == n->saved.input_shapes[i], "op ", n->op->name(),
                    " gradient for input ", i, " has shape ", shape_str(g.shape()), ", expected ",
                    shape_str(n->saved.input_shapes[i]));
        // A gradient computed in a wider dtype (an f32 norm backward of a bf16 input under
        // autocast) flows on in the input's dtype.
        if (g.dtype() != n->saved.input_dtypes[i]) g = g.to(n->saved.input_dtypes[i]);
      }
      if (e.fn) {
        auto& slot = pending[e.fn.get()];
        slot.resize(e.fn->output_shapes.size());
        if (g.defined()) slot[e.output_nr] = add_grads(slot[e.output_nr], g);
        if (--deps[e.fn.get()] == 0) ready.push_back(e.fn.get());
      } else {
        TensorImpl* leaf = e.leaf.get();
        if (g.defined()) leaf_pending[leaf] = add_grads(leaf_pending[leaf], g);
        if (--leaf_deps[leaf] == 0) {
          auto it = leaf_pending.find(leaf);
          if (it != leaf_pending.end()) {
            accumulate_leaf(e.leaf, it->second);
            leaf_pending.erase(it);
          }
        }
      }
    }
    if (!retain_graph) {
      n->saved.inputs.clear();
      n->saved.outputs.clear();
      n->released = true;
    }
  }
}

}  // namespace loom
