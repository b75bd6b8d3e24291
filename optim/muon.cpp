#include "optim/muon.h"

#include <algorithm>
#include <cmath>

#include "core/ops/elementwise.h"
#include "core/ops/linalg.h"
#include "core/ops/reduce.h"

namespace loom::optim {

namespace {

// Quintic coefficients from the reference: chosen to push every singular value in (0, 1] towards
// [0.7, 1.1] quickly rather than to converge exactly to 1.
constexpr float kNsA = 3.4445f, kNsB = -4.7750f, kNsC = 2.0315f;

}  // namespace

MuonMatrices muon_matrices(const Shape& shape) {
  LOOM_CHECK(shape.size() >= 2, "[muon] a parameter of shape ", shape_str(shape),
             " is not a matrix");
  if (shape.size() == 3) return {shape[0], shape[1], shape[2]};
  int64_t rest = 1;
  for (size_t d = 1; d < shape.size(); ++d) rest *= shape[d];
  return {1, shape[0], rest};
}

int64_t newton_schulz_flops(int64_t rows, int64_t cols, int64_t steps) {
  const int64_t r = std::min(rows, cols), c = std::max(rows, cols);
  return steps * (4 * r * r * c + 2 * r * r * r);
}

MuonScale muon_scale_from_name(const std::string& name) {
  if (name == "rows_cols") return MuonScale::rows_cols;
  if (name == "moonlight") return MuonScale::moonlight;
  LOOM_FAIL("[muon] unknown scale '", name, "' (expected rows_cols or moonlight)");
}

const char* muon_scale_name(MuonScale scale) {
  return scale == MuonScale::moonlight ? "moonlight" : "rows_cols";
}

double muon_scale_factor(MuonScale scale, int64_t rows, int64_t cols) {
  if (scale == MuonScale::moonlight) return 0.2 * std::sqrt(double(std::max(rows, cols)));
  return std::sqrt(std::max(1.0, double(rows) / double(cols)));
}

namespace {

// NS5 on a CUDA device, in bf16 as the reference runs it on GPUs: the normalization in f32, then
// every product and blend in bf16 (cuBLASLt, f32 accumulation). Same orientation rule as the host.
Tensor newton_schulz_cuda(const Tensor& g, int64_t steps) {
  const bool tall = g.size(0) > g.size(1);
  const Tensor src = (tall ? g.t() : g).to(DType::f32);
  const Tensor norm = sqrt(sum(square(src)));
  Tensor x = (src / (norm + 1e-7)).to(DType::bf16);
  for (int64_t s = 0; s < steps; ++s) {
    const Tensor a = matmul(x, x.t());
    const Tensor b = a * double(kNsB) + matmul(a, a) * double(kNsC);
    x = x * double(kNsA) + matmul(b, x);
  }
  return (tall ? x.t() : x).to(DType::f32).contiguous();
}

}  // namespace

Tensor newton_schulz(const Tensor& g, int64_t steps) {
  LOOM_CHECK(g.defined() && g.dim() == 2, "[muon] newton_schulz expects a 2-D tensor, got ",
             g.defined() ? shape_str(g.shape()) : std::string("an undefined tensor"));
  LOOM_CHECK(steps >= 0, "[muon] newton_schulz steps must be >= 0, got ", steps);
  NoGradGuard no_grad;
  if (g.device().is_cuda()) return newton_schulz_cuda(g, steps);
  // The wide orientation keeps the Gram matrix X Xᵀ small; copying the transpose into a fresh
  // contiguous buffer makes the tall case run exactly the wide case's arithmetic, hence the
  // bitwise NS5(Gᵀ) == NS5(G)ᵀ.
  const bool tall = g.size(0) > g.size(1);
  const Tensor src = tall ? g.t() : g;
  Tensor x = empty(src.shape());
  copy_into(x, src);
  float* xd = x.data<float>();
  const int64_t n = x.numel();

  // Frobenius norm in double so large matrices do not lose the sum; it bounds the spectral norm,
  // which puts every singular value in [0, 1] where the quintic map is designed to work.
  double sq = 0;
  for (int64_t k = 0; k < n; ++k) sq += double(xd[k]) * double(xd[k]);
  const float denom = float(std::sqrt(sq) + 1e-7);
  for (int64_t k = 0; k < n; ++k) xd[k] /= denom;

  for (int64_t s = 0; s < steps; ++s) {
    Tensor a = matmul(x, x.t()).contiguous();  // [r, r]
    const Tensor aa = matmul(a, a).contiguous();
    float* ad = a.data<float>();
    const float* aad = aa.data<float>();
    for (int64_t k = 0; k < a.numel(); ++k) ad[k] = kNsB * ad[k] + kNsC * aad[k];
    const Tensor bx = matmul(a, x).contiguous();  // [r, c]
    const float* bxd = bx.data<float>();
    for (int64_t k = 0; k < n; ++k) xd[k] = kNsA * xd[k] + bxd[k];
  }
  return tall ? x.t().contiguous() : x;
}

Muon::Muon(std::vector<Tensor> params, const MuonConfig& config)
    : Optimizer(std::move(params), config.lr, "muon"), config_(config) {
  LOOM_CHECK(config.momentum >= 0 && config.momentum < 1, "[muon] momentum must be in [0, 1), got ",
             config.momentum);
  LOOM_CHECK(config.weight_decay >= 0, "[muon] weight_decay must be >= 0, got ",
             config.weight_decay);
  LOOM_CHECK(config.ns_steps >= 1, "[muon] ns_steps must be >= 1, got ", config.ns_steps);
  for (size_t i = 0; i < params_.size(); ++i) {
    LOOM_CHECK(params_[i].dim() >= 2, "[muon] parameter ", param_label(i), " has shape ",
               shape_str(params_[i].shape()),
               "; Muon needs matrices (rank >= 2): put it in an AdamW group");
  }
  buffers_.resize(params_.size());
}

void Muon::set_momentum_buffer(size_t i, const Tensor& buffer) {
  LOOM_CHECK(i < params_.size(), "[muon] parameter index ", i, " out of range (", params_.size(),
             " parameters)");
  if (!buffer.defined()) {
    buffers_[i] = Tensor();
    return;
  }
  LOOM_CHECK(buffer.shape() == params_[i].shape(), "[muon] momentum buffer of shape ",
             shape_str(buffer.shape()), " for parameter ", param_label(i), " of shape ",
             shape_str(params_[i].shape()));
  buffers_[i] = copy_state_tensor(buffer, params_[i].device());
}

StateKinds Muon::state_kinds(size_t) const {
  return {.tensors = {"muon_momentum"}, .counters = {}};
}

std::vector<ParamState> Muon::state() const {
  std::vector<ParamState> out(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    if (buffers_[i].defined()) out[i].tensors["muon_momentum"] = buffers_[i];
  return out;
}

void Muon::load_state(const std::vector<ParamState>& state) {
  check_state_count(state);
  for (size_t i = 0; i < params_.size(); ++i) {
    check_param_state_of(i, state[i]);
    const auto it = state[i].tensors.find("muon_momentum");
    set_momentum_buffer(i, it == state[i].tensors.end() ? Tensor() : it->second);
  }
}

// Through ops, so one formula serves every device: the lerp forms of the reference (torch
// lerp_), m += (1 - beta)(g - m), u = g + beta (m - g); then the whole parameter is decayed by
// (1 - lr wd) before the orthogonalized update is added, so the update itself is not decayed.
void Muon::step() {
  NoGradGuard no_grad;
  const double beta = float(config_.momentum), one_beta = float(1 - config_.momentum);
  const double decay = float(1 - lr_ * config_.weight_decay);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = grad_of(i);
    if (!g.defined()) continue;
    Tensor& p = params_[i];
    if (!buffers_[i].defined()) buffers_[i] = zeros(p.shape(), DType::f32, p.device());
    const Tensor& m = buffers_[i];
    copy_into(m, m + (g - m) * one_beta);
    const Tensor u = config_.nesterov ? g + (m - g) * beta : m;  // m is read-only below
    copy_into(p, p * decay);
    float step = 0;
    const Tensor o = orthogonalized(i, u, &step);
    copy_into(p, p - o * double(step));
  }
}

Tensor Muon::orthogonalized(size_t i, const Tensor& u, float* step) const {
  // Per matrix of the whole parameter (gathered when this rank holds a slice).
  const MuonSplit* split = split_of(i);
  const Tensor whole = split ? split->gather(u) : u;
  const MuonMatrices L = muon_matrices(whole.shape());
  const Tensor stack = whole.contiguous().view({L.count, L.rows, L.cols});
  Tensor o = empty({L.count, L.rows, L.cols}, DType::f32, u.device());
  for (int64_t j = 0; j < L.count; ++j)
    copy_into(o.select(0, j), newton_schulz(stack.select(0, j), config_.ns_steps));
  if (split) o = split->slice(o.view(whole.shape()));
  *step = float(lr_ * muon_scale_factor(config_.scale, L.rows, L.cols));
  return o.contiguous().view(u.shape());
}

const MuonSplit* Muon::split_of(size_t i) const {
  if (!config_.splits) return nullptr;
  const auto it = config_.splits->find(params_[i].name());
  return it == config_.splits->end() ? nullptr : &it->second;
}

}  // namespace loom::optim
