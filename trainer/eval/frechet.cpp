#include "trainer/eval/frechet.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace loom::trainer {

GaussianFit fit_gaussian(const Tensor& features) {
  LOOM_CHECK(features.dim() == 2 && features.size(0) >= 2,
             "[frechet] features must be [N >= 2, D], "
             "got ",
             shape_str(features.shape()));
  const int64_t n = features.size(0), d = features.size(1);
  const std::vector<double> x = features.to_vector<double>();
  GaussianFit g;
  g.dim = d;
  g.mean.assign(size_t(d), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) g.mean[size_t(j)] += x[size_t(i * d + j)];
  for (double& m : g.mean) m /= double(n);
  g.cov.assign(size_t(d * d), 0.0);
  std::vector<double> c(static_cast<size_t>(d));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) c[size_t(j)] = x[size_t(i * d + j)] - g.mean[size_t(j)];
    for (int64_t a = 0; a < d; ++a)
      for (int64_t b = a; b < d; ++b) g.cov[size_t(a * d + b)] += c[size_t(a)] * c[size_t(b)];
  }
  for (int64_t a = 0; a < d; ++a)
    for (int64_t b = a; b < d; ++b) {
      g.cov[size_t(a * d + b)] /= double(n - 1);
      g.cov[size_t(b * d + a)] = g.cov[size_t(a * d + b)];
    }
  return g;
}

void symmetric_eigen(std::vector<double> a, int64_t n, std::vector<double>* values,
                     std::vector<double>* vectors) {
  std::vector<double> v(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) v[size_t(i * n + i)] = 1.0;
  auto at = [&](int64_t r, int64_t c) -> double& { return a[size_t(r * n + c)]; };
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, total = 0;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = 0; q < n; ++q) {
        total += at(p, q) * at(p, q);
        if (p != q) off += at(p, q) * at(p, q);
      }
    if (off <= 1e-30 * std::max(total, 1e-300)) break;
    for (int64_t p = 0; p < n - 1; ++p) {
      for (int64_t q = p + 1; q < n; ++q) {
        if (std::abs(at(p, q)) < 1e-300) continue;
        // The rotation that zeroes a[p][q] (Golub & Van Loan, symmetric Schur decomposition).
        const double theta = (at(q, q) - at(p, p)) / (2 * at(p, q));
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // A <- A J
          const double akp = at(k, p), akq = at(k, q);
          at(k, p) = c * akp - s * akq;
          at(k, q) = s * akp + c * akq;
        }
        for (int64_t k = 0; k < n; ++k) {  // A <- J^T A
          const double apk = at(p, k), aqk = at(q, k);
          at(p, k) = c * apk - s * aqk;
          at(q, k) = s * apk + c * aqk;
        }
        for (int64_t k = 0; k < n; ++k) {  // V <- V J
          const double vkp = v[size_t(k * n + p)], vkq = v[size_t(k * n + q)];
          v[size_t(k * n + p)] = c * vkp - s * vkq;
          v[size_t(k * n + q)] = s * vkp + c * vkq;
        }
      }
    }
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return at(i, i) < at(j, j); });
  values->assign(size_t(n), 0.0);
  vectors->assign(size_t(n * n), 0.0);
  for (int64_t k = 0; k < n; ++k) {
    (*values)[size_t(k)] = at(order[size_t(k)], order[size_t(k)]);
    for (int64_t r = 0; r < n; ++r)
      (*vectors)[size_t(r * n + k)] = v[size_t(r * n + order[size_t(k)])];
  }
}

namespace {
// Row-major [n, n] product.
std::vector<double> mm(const std::vector<double>& a, const std::vector<double>& b, int64_t n) {
  std::vector<double> c(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < n; ++k) {
      const double aik = a[size_t(i * n + k)];
      for (int64_t j = 0; j < n; ++j) c[size_t(i * n + j)] += aik * b[size_t(k * n + j)];
    }
  return c;
}
}  // namespace

double frechet_distance(const GaussianFit& a, const GaussianFit& b) {
  LOOM_CHECK(a.dim == b.dim, "[frechet] feature dims differ: ", a.dim, " vs ", b.dim);
  const int64_t n = a.dim;
  double mean_term = 0, trace_term = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = a.mean[size_t(i)] - b.mean[size_t(i)];
    mean_term += d * d;
    trace_term += a.cov[size_t(i * n + i)] + b.cov[size_t(i * n + i)];
  }
  std::vector<double> w, v;
  symmetric_eigen(a.cov, n, &w, &v);
  // S1^{1/2} = V diag(sqrt(max(w, 0))) V^T
  std::vector<double> vs(size_t(n * n)), vt(size_t(n * n));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c) {
      vs[size_t(r * n + c)] = v[size_t(r * n + c)] * std::sqrt(std::max(w[size_t(c)], 0.0));
      vt[size_t(c * n + r)] = v[size_t(r * n + c)];
    }
  const std::vector<double> root = mm(vs, vt, n);
  const std::vector<double> m = mm(mm(root, b.cov, n), root, n);
  std::vector<double> mw, mv;
  symmetric_eigen(m, n, &mw, &mv);
  double sqrt_trace = 0;
  for (double e : mw) sqrt_trace += std::sqrt(std::max(e, 0.0));
  return mean_term + trace_term - 2 * sqrt_trace;
}

}  // namespace loom::trainer
