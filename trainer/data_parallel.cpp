#include "trainer/data_parallel.h"

#include <set>
#include <sstream>

#include "models/moe/expert_parameters.h"
#include "parallel/nccl_communicator.h"
#include "parallel/agreement.h"

namespace loom::trainer {

namespace {

// FNV-1a, as Recipe::hash: the same on every platform, so ranks on different nodes agree.
uint64_t fnv1a(const std::string& text, uint64_t h = 14695981039346656037ull) {
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

DataParallel::DataParallel(const Recipe& recipe, const ModelSplits& model, Device device)
    : plan_(parallel_plan_from_recipe(recipe, parallel::launched_world_size(), model)) {
  auto world = parallel::world_communicator();
  // The launcher's word and MPI's must agree, or the plan was checked against the wrong size.
  LOOM_CHECK(world->size() == parallel::launched_world_size(), "[train] MPI reports ",
             world->size(), " ranks but the launcher announced ", parallel::launched_world_size());
  if (device.is_cuda() && world->size() > 1) {
    recipe.check(parallel::nccl_available(), "train.device",
                 "is \"cuda\" with several ranks, which needs NCCL, and this loom was built "
                 "without it (install NCCL and reconfigure with -DLOOM_CUDA=ON)");
    world = parallel::nccl_communicator(world, device);
  }
  grid_ = std::make_unique<parallel::ParallelGrid>(std::move(world), plan_.grid);
  if (plan_.grid.tp * plan_.grid.sp > 1 || plan_.grid.ep > 1)
    model_parallel_ = nn::ModelParallel::from_grid(*grid_, plan_.sequence_parallel);
}

std::shared_ptr<parallel::Communicator> DataParallel::optimizer_group() const {
  return plan_.shard_optimizer_state && size() > 1 ? grid_->dp() : nullptr;
}

std::ostream& DataParallel::log(std::ostream& out) {
  return is_root() ? out : null_;
}

std::ostream& DataParallel::progress(std::ostream& out) {
  return grid_->world()->size() == 1 ? out : null_;
}

std::string DataParallel::describe() const {
  std::ostringstream os;
  os << "dp " << size();
  if (plan_.grid.ep > 1) os << " (experts over ep " << plan_.grid.ep << ")";
  if (plan_.grid.tp > 1) os << " x tp " << plan_.grid.tp;
  if (plan_.grid.sp > 1) os << " x sp " << plan_.grid.sp;
  if (plan_.sequence_parallel && plan_.grid.tp > 1) os << " (sequence parallel)";
  os << " over " << grid_->world()->size() << " rank" << (grid_->world()->size() > 1 ? "s" : "")
     << " (" << grid_->world()->backend() << "), " << plan_.micro_batch << " examples per rank x "
     << plan_.grad_accum << " micro-batch" << (plan_.grad_accum > 1 ? "es" : "") << " per step";
  if (!reducers_.empty())
    os << ", " << num_buckets() << " gradient bucket" << (num_buckets() > 1 ? "s" : "");
  return os.str();
}

data::LoaderConfig DataParallel::loader_config(data::LoaderConfig base) const {
  base.batch_size = plan_.micro_batch;
  base.rank = rank();
  base.world_size = size();
  return base;
}

Tensor DataParallel::local_rows(const Tensor& step_tensor, int64_t micro) const {
  const int64_t n = plan_.micro_batch;
  return step_tensor.narrow(0, (micro * size() + rank()) * n, n).contiguous();
}

void DataParallel::check_same_job(const Recipe& recipe, const TrainOptions& options,
                                  const std::vector<std::pair<std::string, Tensor>>& params) const {
  parallel::Communicator& world = *grid_->world();
  parallel::require_same(world, recipe.hash(), "[train] the resolved recipe",
                         "start every rank with the same recipe file and --set overrides");
  parallel::require_same(world, fnv1a(options.out_dir + (options.resume ? "\n--resume" : "")),
                         "[train] the --out and --resume options",
                         "pass the same --out and --resume to every rank");
  uint64_t layout = fnv1a("");
  for (const auto& [name, t] : params)
    layout = fnv1a(name + " " + shape_str(t.shape()) + " " + dtype_name(t.dtype()) + "\n", layout);
  parallel::require_same(world, layout, "[train] the list of parameter names, shapes and dtypes",
                         "every rank must run the same loom build");
}

void DataParallel::broadcast_from_root(nn::Module& model) const {
  std::set<std::string> experts;  // at ep = 1 the edp group is the dp group
  for (const auto& [name, t] : moe::split_expert_parameters(model).experts) experts.insert(name);
  for (const auto& [name, t] : model.state_dict())
    (experts.count(name) ? grid_->edp() : grid_->dp())->broadcast(t, 0);
}

void DataParallel::add_reducer(const std::vector<std::pair<std::string, Tensor>>& params,
                               const std::shared_ptr<parallel::Communicator>& group) {
  // One rank has nothing to average (and its gradients may live on a GPU the host backends cannot
  // read): no reducer then.
  if (group->size() == 1 || params.empty()) return;
  reducers_.push_back(std::make_unique<parallel::DpReducer>(params, group, plan_.bucket_bytes));
}

void DataParallel::reduce_gradients(nn::Module& model) {
  if (plan_.grid.ep == 1) return add_reducer(model.named_parameters(), grid_->dp());
  const moe::ExpertParameterSplit split = moe::split_expert_parameters(model);
  add_reducer(split.replicated, grid_->dp());
  add_reducer(split.experts, grid_->edp());
}

void DataParallel::begin_micro_batch(int64_t micro) {
  for (auto& reducer : reducers_) reducer->set_sync(micro == plan_.grad_accum - 1);
}

void DataParallel::finish_gradients() {
  for (auto& reducer : reducers_) reducer->finish();
}

int64_t DataParallel::num_buckets() const {
  int64_t n = 0;
  for (const auto& reducer : reducers_) n += int64_t(reducer->bucket_names().size());
  return n;
}

std::vector<double> DataParallel::reduce(const std::vector<double>& values,
                                         parallel::ReduceOp op) const {
  if (values.empty()) return values;
  const Tensor t = from_vector(values, {int64_t(values.size())});
  grid_->dp()->all_reduce(t, op);
  return t.to_vector<double>();
}

std::vector<double> DataParallel::average(const std::vector<double>& values) const {
  return reduce(values, parallel::ReduceOp::avg);
}

std::vector<double> DataParallel::sum(const std::vector<double>& values) const {
  return reduce(values, parallel::ReduceOp::sum);
}

std::vector<double> DataParallel::all_ranks(double value) const {
  const Tensor mine = full({1}, value, DType::f64);
  const Tensor all = empty({int64_t(grid_->world()->size())}, DType::f64);
  grid_->world()->all_gather(mine, all);
  return all.to_vector<double>();
}

bool DataParallel::any_rank(bool flag) const {
  return parallel::any_rank(*grid_->world(), flag);
}

void DataParallel::barrier() const {
  grid_->world()->barrier();
}

}  // namespace loom::trainer
