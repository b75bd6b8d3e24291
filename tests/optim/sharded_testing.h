#pragma once
// Helpers shared by the sharded-optimizer tests (one process and under mpirun): a small DiT-like
// set of named parameters, gradients that depend only on (step, parameter) so every rank and the
// single-rank reference see the same "already averaged" values, and bitwise comparison.
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "optim/param_groups.h"
#include "testing.h"

namespace loom::optim::sharded_testing {

// Matrices of several orientations, a 3-D expert stack, a conv weight, vectors and a scalar.
inline std::vector<Tensor> model_params() {
  const std::vector<std::pair<const char*, Shape>> spec = {
      {"x_embedder.proj.weight", {8, 1, 2, 2}},
      {"x_embedder.proj.bias", {8}},
      {"blocks.0.attn.qkv.weight", {24, 8}},
      {"blocks.0.attn.qkv.bias", {24}},
      {"blocks.0.attn.proj.weight", {8, 8}},
      {"blocks.0.mlp.fc1.weight", {32, 8}},
      {"blocks.0.mlp.fc2.weight", {8, 32}},
      {"blocks.0.moe.experts.w_up", {4, 16, 8}},
      {"blocks.0.adaLN.weight", {48, 8}},
      {"final_layer.linear.weight", {4, 8}},
      {"logit_scale", {}}};
  std::vector<Tensor> out;
  for (size_t i = 0; i < spec.size(); ++i) {
    Tensor p = testing::uniform(spec[i].second, -0.5, 0.5, 100 + i, DType::f32);
    p.set_name(spec[i].first).set_requires_grad();
    out.push_back(p);
  }
  return out;
}

// The parameters Muon takes (rank >= 2).
inline std::vector<Tensor> matrices(const std::vector<Tensor>& ps) {
  std::vector<Tensor> out;
  for (const Tensor& p : ps)
    if (p.dim() >= 2) out.push_back(p);
  return out;
}

// Fresh parameters with the same names and values.
inline std::vector<Tensor> copy_params(const std::vector<Tensor>& ps) {
  NoGradGuard no_grad;
  std::vector<Tensor> out;
  for (const Tensor& p : ps) {
    Tensor c = p.clone().detach();
    c.set_name(p.name()).set_requires_grad();
    out.push_back(c);
  }
  return out;
}

inline std::vector<std::string> names_of(const std::vector<Tensor>& ps) {
  std::vector<std::string> out;
  for (const Tensor& p : ps) out.push_back(p.name());
  return out;
}

// Gradient of step `step` for parameter `name`: the same on every rank.
inline Tensor grad_for(const Tensor& p, int step) {
  uint64_t seed = 7919 * uint64_t(step + 1);
  for (char c : p.name()) seed = seed * 31 + uint64_t(c);
  return testing::uniform(p.shape(), -1, 1, seed, DType::f32);
}

// One step at a learning rate that moves with the step (a schedule), every parameter with a
// gradient except `skip` (a name; a parameter without gradient must stay put).
inline void step_with(Optimizer& opt, int step, const std::string& skip = "") {
  for (const Tensor& p : opt.params()) p.set_grad(p.name() == skip ? Tensor() : grad_for(p, step));
  opt.set_lr(opt.lr() * (1.0 - 0.1 * step));
  opt.step();
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), size_t(ca.numel()) * dtype_size(ca.dtype())) ==
         0;
}

// Every parameter bitwise equal, with the first offender named.
inline ::testing::AssertionResult same_params(const std::vector<Tensor>& a,
                                              const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "parameter counts differ";
  for (size_t i = 0; i < a.size(); ++i)
    if (!bitwise_equal(a[i], b[i]))
      return ::testing::AssertionFailure() << "parameter " << a[i].name() << " differs";
  return ::testing::AssertionSuccess();
}

// The same entries (keys, shapes, bits) in both checkpoint forms, with the first offender named.
inline ::testing::AssertionResult same_state(const StateDict& a, const StateDict& b) {
  if (a.counters != b.counters) return ::testing::AssertionFailure() << "counters differ";
  std::map<std::string, Tensor> mb(b.tensors.begin(), b.tensors.end());
  if (a.tensors.size() != mb.size())
    return ::testing::AssertionFailure()
           << a.tensors.size() << " tensor entries against " << mb.size();
  for (const auto& [key, t] : a.tensors) {
    const auto it = mb.find(key);
    if (it == mb.end()) return ::testing::AssertionFailure() << "no entry " << key;
    if (!bitwise_equal(t, it->second)) return ::testing::AssertionFailure() << key << " differs";
  }
  return ::testing::AssertionSuccess();
}

// Muon for the hidden matrices, AdamW for the rest (the trainer's default DiT grouping).
inline std::vector<ParamGroupSpec> muon_adamw_groups() {
  return {{.name = "muon",
           .patterns = {"blocks.*.weight", "blocks.*.experts.*"},
           .optimizer = "muon",
           .lr = 0.02,
           .weight_decay = 0.01},
          {.name = "adamw", .optimizer = "adamw", .lr = 1e-3, .weight_decay = 0.01}};
}

const MuonConfig kMuon{.lr = 0.02, .momentum = 0.9, .weight_decay = 0.05};
const AdamWConfig kAdamW{.lr = 3e-3, .beta1 = 0.8, .beta2 = 0.95, .weight_decay = 0.1};

}  // namespace loom::optim::sharded_testing
