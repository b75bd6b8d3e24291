#include "models/nn/init.h"

#include <cmath>

#include "core/ops/elementwise.h"

namespace loom::nn::init {

namespace {

struct Fans {
  int64_t in, out;
};

Fans fans_of(const Tensor& t, const char* op) {
  LOOM_CHECK(t.dim() >= 2, "[", op, "] needs a tensor with at least 2 dims to compute fans, got ",
             shape_str(t.shape()));
  LOOM_CHECK(t.numel() > 0, "[", op, "] needs a non-empty tensor, got ", shape_str(t.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

void write(const Tensor& dst, const Tensor& values, const char* op) {
  LOOM_CHECK(dst.defined(), "[", op, "] undefined tensor");
  LOOM_CHECK(is_floating(dst.dtype()), "[", op, "] needs a floating tensor, got ",
             dtype_name(dst.dtype()));
  copy_into(dst, values.to(dst.device()));
}

}  // namespace

void uniform_(const Tensor& t, Generator& gen, double lo, double hi) {
  LOOM_CHECK(hi >= lo, "[uniform_] empty range [", lo, ", ", hi, ")");
  NoGradGuard no_grad;
  write(t, rand(t.shape(), gen, DType::f64) * (hi - lo) + lo, "uniform_");
}

void normal_(const Tensor& t, Generator& gen, double mean, double std) {
  LOOM_CHECK(std >= 0, "[normal_] std must be >= 0, got ", std);
  NoGradGuard no_grad;
  write(t, randn(t.shape(), gen, DType::f64) * std + mean, "normal_");
}

void zeros_(const Tensor& t) {
  write(t, zeros({}, DType::f64), "zeros_");
}
void ones_(const Tensor& t) {
  write(t, ones({}, DType::f64), "ones_");
}

void xavier_uniform_(const Tensor& t, Generator& gen, double gain) {
  const Fans f = fans_of(t, "xavier_uniform_");
  const double bound = gain * std::sqrt(6.0 / double(f.in + f.out));
  uniform_(t, gen, -bound, bound);
}

void kaiming_uniform_(const Tensor& t, Generator& gen, double a) {
  const Fans f = fans_of(t, "kaiming_uniform_");
  const double bound = std::sqrt(6.0 / ((1.0 + a * a) * double(f.in)));
  uniform_(t, gen, -bound, bound);
}

}  // namespace loom::nn::init
