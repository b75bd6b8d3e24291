#include "models/diffusion/rectified_flow.h"

#include "core/ops/elementwise.h"
#include "core/ops/reduce.h"

namespace loom::diffusion {

namespace {

void check_data(const Tensor& x, const char* what, const char* op) {
  LOOM_CHECK(x.dim() >= 2 && x.numel() > 0, "[diffusion] ", op, ": ", what,
             " must be a non-empty [B, C, ...], got ", shape_str(x.shape()));
  LOOM_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, "[diffusion] ", op, ": ", what,
             " must be f32 or f64, got ", dtype_name(x.dtype()));
}

// t [B] as [B, 1, ...] in x's dtype, for broadcasting against x.
Tensor per_sample(const Tensor& t, const Tensor& x) {
  Shape shape(size_t(x.dim()), 1);
  shape[0] = x.size(0);
  return t.to(x.dtype()).reshape(shape);
}

// The first C channels of the model output (velocity) in z's dtype, after checking the shape.
Tensor velocity(const Tensor& out, const Tensor& z, const char* op) {
  const int64_t C = z.size(1);
  Shape with_sigma = z.shape();
  with_sigma[1] *= 2;
  LOOM_CHECK(out.defined() && (out.shape() == z.shape() || out.shape() == with_sigma),
             "[diffusion] ", op, ": model output must be ", shape_str(z.shape()), " or ",
             shape_str(with_sigma), ", got ",
             out.defined() ? shape_str(out.shape()) : std::string("an undefined tensor"));
  // Under autocast the model answers in bf16; the loss and the sampler work in z's dtype.
  const Tensor v = out.size(1) == C ? out : out.narrow(1, 0, C);
  return v.dtype() == z.dtype() ? v : v.to(z.dtype());
}

}  // namespace

Tensor RectifiedFlow::sample_t(int64_t batch, Generator& gen) const {
  LOOM_CHECK(batch >= 1, "[diffusion] sample_t: batch must be >= 1, got ", batch);
  return sigmoid(randn({batch}, gen));
}

Tensor RectifiedFlow::interpolate(const Tensor& x0, const Tensor& t, const Tensor& noise) const {
  check_data(x0, "x0", "interpolate");
  LOOM_CHECK(noise.shape() == x0.shape() && noise.dtype() == x0.dtype(),
             "[diffusion] interpolate: noise ", shape_str(noise.shape()), " ",
             dtype_name(noise.dtype()), " must match x0 ", shape_str(x0.shape()), " ",
             dtype_name(x0.dtype()));
  LOOM_CHECK(t.dim() == 1 && t.size(0) == x0.size(0) && is_floating(t.dtype()),
             "[diffusion] interpolate: t must be a floating [", x0.size(0), "], got ",
             shape_str(t.shape()), " ", dtype_name(t.dtype()));
  const Tensor tb = per_sample(t, x0);
  return (1.0 - tb) * x0 + tb * noise;
}

Losses RectifiedFlow::training_losses(const ModelFn& model, const Tensor& x0,
                                      Generator& gen) const {
  check_data(x0, "x0", "training_losses");
  const Tensor t = sample_t(x0.size(0), gen);
  const Tensor noise = randn(x0.shape(), gen, x0.dtype()).to(x0.device());
  return training_losses(model, x0, t, noise);
}

Losses RectifiedFlow::training_losses(const ModelFn& model, const Tensor& x0, const Tensor& t,
                                      const Tensor& noise) const {
  LOOM_CHECK(bool(model), "[diffusion] training_losses: empty model function");
  const Tensor z = interpolate(x0, t, noise);
  const Tensor v = velocity(model(z, t.to(DType::f32).to(x0.device())), z, "training_losses");
  // Every sample has the same number of elements, so the reference's mean of per-sample means
  // is the plain mean.
  const Tensor loss = mean(square(noise - x0 - v));
  return {loss, loss, zeros({}, x0.dtype(), x0.device())};
}

Tensor RectifiedFlow::sample_euler(const ModelFn& model, const Shape& shape, int64_t steps,
                                   Generator& gen, const ProgressFn& progress) const {
  LOOM_CHECK(shape.size() >= 2 && numel_of(shape) > 0,
             "[diffusion] sample_euler: shape must be a non-empty [B, C, ...], got ",
             shape_str(shape));
  LOOM_CHECK(steps >= 1, "[diffusion] sample_euler: steps must be >= 1, got ", steps);
  LOOM_CHECK(bool(model), "[diffusion] sample_euler: empty model function");
  NoGradGuard no_grad;
  const double dt = 1.0 / double(steps);
  Tensor z = randn(shape, gen);
  for (int64_t i = steps; i >= 1; --i) {
    const Tensor t = full({shape[0]}, double(i) / double(steps)).to(z.device());
    z = z - dt * velocity(model(z, t), z, "sample_euler");
    if (progress) progress(steps - i + 1, steps);
  }
  return z;
}

}  // namespace loom::diffusion
