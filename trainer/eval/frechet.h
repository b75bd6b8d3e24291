#pragma once
// Fréchet distance between two Gaussians fitted to feature sets (the FID formula):
//   d² = |mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^{1/2})
// Tr((S1 S2)^{1/2}) is computed as the sum of square roots of the eigenvalues of
// S1^{1/2} S2 S1^{1/2} (symmetric PSD), with S1^{1/2} from a symmetric eigendecomposition, so no
// general matrix square root is needed. Everything in double on the host; feature dims up to a
// few hundred are cheap (cyclic Jacobi).
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace loom::trainer {

struct GaussianFit {
  std::vector<double> mean;  // [D]
  std::vector<double> cov;   // [D, D] row-major, unbiased (N - 1)
  int64_t dim = 0;
};

// Mean and covariance of features [N, D] (N >= 2).
GaussianFit fit_gaussian(const Tensor& features);
double frechet_distance(const GaussianFit& a, const GaussianFit& b);

// Eigenvalues (ascending) and eigenvectors (columns of `vectors`, row-major [n, n]) of a
// symmetric matrix by cyclic Jacobi rotations.
void symmetric_eigen(std::vector<double> matrix, int64_t n, std::vector<double>* values,
                     std::vector<double>* vectors);

}  // namespace loom::trainer
