#include "models/nn/model_parallel.h"

namespace loom::nn {

ModelParallel ModelParallel::from_grid(const parallel::ParallelGrid& grid, bool sequence_parallel) {
  return ModelParallel{.tp = grid.tp(),
                       .sp = grid.sp(),
                       .sequence_parallel = sequence_parallel,
                       .ep = grid.dims().ep > 1 ? grid.ep() : nullptr};
}

ModelParallel ModelParallel::local(bool sequence_parallel) {
  return ModelParallel{.tp = std::make_shared<parallel::LocalCommunicator>("tp"),
                       .sp = std::make_shared<parallel::LocalCommunicator>("sp"),
                       .sequence_parallel = sequence_parallel};
}

std::vector<parallel::Group> ModelParallel::residual_token_groups() const {
  std::vector<parallel::Group> groups = tp_region_token_groups();
  if (sequence_parallel && tp_size() > 1) groups.push_back(tp);
  return groups;
}

std::vector<parallel::Group> ModelParallel::tp_region_token_groups() const {
  if (sp_size() > 1) return {sp};
  return {};
}

int64_t ModelParallel::residual_tokens(int64_t tokens) const {
  const int64_t split = int64_t(sp_size()) * (sequence_parallel ? tp_size() : 1);
  LOOM_CHECK(tokens % split == 0, "[ModelParallel] ", tokens,
             " tokens cannot be split evenly over ", split, " ranks (sp ", sp_size(),
             sequence_parallel ? detail::cat(" x tp ", tp_size(), ", sequence parallel") : "", ")");
  return tokens / split;
}

Tensor ModelParallel::shard_tokens(const Tensor& x) const {
  Tensor y = x;
  for (const parallel::Group& g : residual_token_groups()) y = parallel::scatter_to(y, g, 1);
  return y;
}

Tensor ModelParallel::gather_tokens(const Tensor& x) const {
  const std::vector<parallel::Group> groups = residual_token_groups();
  Tensor y = x;
  for (auto g = groups.rbegin(); g != groups.rend(); ++g) y = parallel::gather_from(y, *g, 1);
  return y;
}

Tensor ModelParallel::sum_grad_over(const Tensor& t, const std::vector<parallel::Group>& groups) {
  Tensor y = t;
  for (const parallel::Group& g : groups) y = parallel::copy_to(y, g);
  return y;
}

}  // namespace loom::nn
