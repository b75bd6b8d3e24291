#include "trainer/factory.h"

#include "core/ops/linalg.h"
#include "data/fashion_mnist.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/runtime.h"
#include "optim/param_groups.h"
#include "parallel/communicator.h"

namespace loom::trainer {

namespace {
// Of two keys whose combination is inconsistent, the one the user set (the second when both or
// neither were), so the message points at the line to edit.
std::string set_key(const Recipe& r, const std::string& a, const std::string& b) {
  return r.location(b).ends_with(":default") && !r.location(a).ends_with(":default") ? a : b;
}
}  // namespace

dit::DiTConfig dit_config_from_recipe(const Recipe& r) {
  dit::DiTConfig c;
  const std::string name = r.get_string("model.name");
  if (name == "custom") {
    c.input_size = r.get_int("model.input_size");
    c.in_channels = r.get_int("model.in_channels");
    c.patch_size = r.get_int("model.patch_size");
    c.hidden_size = r.get_int("model.hidden_size");
    c.depth = r.get_int("model.depth");
    c.num_heads = r.get_int("model.num_heads");
    c.mlp_ratio = r.get_double("model.mlp_ratio");
    c.num_experts = r.get_int("model.num_experts");
    c.top_k = r.get_int("model.top_k");
    c.num_shared_experts = r.get_int("model.num_shared_experts");
  } else {
    try {
      c = dit::dit_config(name);
    } catch (const Error& e) {
      r.check(false, "model.name", e.what());
    }
    c.input_size = r.get_int("model.input_size");
    c.in_channels = r.get_int("model.in_channels");
  }
  c.num_classes = r.get_int("model.num_classes");
  c.class_dropout_prob = r.get_double("model.class_dropout_prob");
  c.learn_sigma = r.get_bool("model.learn_sigma");
  c.aux_loss_coef = r.get_double("model.aux_loss_coef");
  c.capacity_factor = r.get_double("model.capacity_factor");
  c.aux_loss_global_counts = r.get_bool("model.aux_loss_global_counts");
  r.check(c.hidden_size % c.num_heads == 0, set_key(r, "model.hidden_size", "model.num_heads"),
          "hidden_size " + std::to_string(c.hidden_size) + " is not divisible by num_heads " +
              std::to_string(c.num_heads));
  r.check(c.hidden_size % 4 == 0, "model.hidden_size",
          "must be divisible by 4 (2-D sin-cos position embedding)");
  r.check(c.input_size % c.patch_size == 0, set_key(r, "model.input_size", "model.patch_size"),
          "input_size " + std::to_string(c.input_size) + " is not divisible by patch_size " +
              std::to_string(c.patch_size));
  r.check(
      c.num_experts == 0 || c.top_k <= c.num_experts, "model.top_k",
      "top_k " + std::to_string(c.top_k) + " exceeds num_experts " + std::to_string(c.num_experts));
  const std::string objective = r.get_string("diffusion.objective");
  r.check(objective != "rectified_flow" || r.get_string("sample.sampler") == "euler",
          "sample.sampler", "rectified_flow trains a velocity model: use the \"euler\" sampler");
  r.check(objective == "rectified_flow" || r.get_string("sample.sampler") != "euler",
          "sample.sampler", "the \"euler\" sampler needs diffusion.objective = \"rectified_flow\"");
  return c;
}

std::shared_ptr<data::Dataset> dataset_from_recipe(const Recipe& r, bool train) {
  const std::string source = r.get_string("data.source");
  const std::string path = r.get_string("data.path");
  const int64_t limit = r.get_int("data.limit");
  if (source == "fashion_mnist") {
    return data::fashion_mnist_dataset(path.empty() ? data::default_fashion_mnist_dir() : path,
                                       train, train ? limit : -1);
  }
  if (source == "image_folder") {
    r.check(!path.empty(), "data.path", "image_folder needs a folder of class sub-folders");
    return data::image_folder_dataset(path, r.get_int("model.input_size"),
                                      r.get_int("model.in_channels"));
  }
  if (source == "latents") {
    r.check(!path.empty(), "data.path", "latents needs a .safetensors file");
    return data::tensor_file_dataset(path);
  }
  const int64_t side = r.get_int("model.input_size");
  return data::synthetic_dataset(
      r.get_int("data.synthetic_size"), {r.get_int("model.in_channels"), side, side},
      r.get_int("model.num_classes"), uint64_t(r.get_int("train.seed")) + (train ? 0 : 1));
}

void check_data_matches_model(const Recipe& r, const data::Dataset& d, int64_t in_channels,
                              int64_t input_size, int64_t num_classes) {
  const Shape want{in_channels, input_size, input_size};
  r.check(d.item_shape() == want, "data.source",
          "the data's images are " + shape_str(d.item_shape()) + " but the model expects " +
              shape_str(want) + " (model.in_channels, model.input_size)");
  r.check(d.num_classes() <= num_classes, "model.num_classes",
          "the data has " + std::to_string(d.num_classes()) + " classes, the model " +
              std::to_string(num_classes));
  r.check(d.size() >= r.get_int("train.batch_size"), "train.batch_size",
          "larger than the dataset (" + std::to_string(d.size()) + " examples)");
}

std::vector<optim::ParamGroupSpec> param_groups_from_recipe(const Recipe& r) {
  const double adamw_lr = r.get_double("optim.adamw_lr");
  r.check(adamw_lr == -1 || adamw_lr >= 0, "optim.adamw_lr",
          "must be -1 (= optim.lr) or >= 0, got " + std::to_string(adamw_lr));
  r.check(r.get_double("optim.muon_momentum") < 1, "optim.muon_momentum", "must be < 1");
  const std::vector<std::string> patterns =
      optim::split_patterns(r.get_string("optim.muon_patterns"));
  r.check(!patterns.empty(), "optim.muon_patterns", "needs at least one pattern");
  optim::ParamGroupSpec muon{
      .name = "muon",
      .patterns = patterns,
      .optimizer = "muon",
      .lr = r.get_double("optim.muon_lr"),
      .weight_decay = r.get_double("optim.weight_decay"),
      .momentum = r.get_double("optim.muon_momentum"),
      .nesterov = r.get_bool("optim.muon_nesterov"),
      .muon_scale = optim::muon_scale_from_name(r.get_string("optim.muon_scale"))};
  // No patterns: the AdamW group takes every parameter Muon does not.
  optim::ParamGroupSpec adamw{.name = "adamw",
                              .patterns = {},
                              .optimizer = "adamw",
                              .lr = adamw_lr == -1 ? r.get_double("optim.lr") : adamw_lr,
                              .weight_decay = r.get_double("optim.weight_decay"),
                              .beta1 = r.get_double("optim.beta1"),
                              .beta2 = r.get_double("optim.beta2"),
                              .eps = r.get_double("optim.eps")};
  return {muon, adamw};
}

std::unique_ptr<optim::Optimizer> optimizer_from_recipe(const Recipe& r, std::vector<Tensor> params,
                                                        const OptimizerLayout& layout) {
  const std::string name = r.get_string("optim.name");
  if (name == "muon") {
    const double base_lr = r.get_double("optim.lr");
    r.check(base_lr > 0, "optim.lr",
            "must be > 0 with muon: the schedule's rate over optim.lr scales every group");
    std::vector<optim::ParamGroupSpec> groups = param_groups_from_recipe(r);
    groups[0].muon_splits = layout.muon_splits;
    try {
      return std::make_unique<optim::MultiOptimizer>(std::move(params), std::move(groups), base_lr,
                                                     layout.shard_over);
    } catch (const Error& e) {
      // Group errors are almost always about the patterns, so point the recipe author there.
      r.check(false, "optim.muon_patterns", e.what());
    }
  }
  // One group of every parameter: make_group_optimizer shards it when asked to.
  const optim::ParamGroupSpec all{.name = name,
                                  .patterns = {},
                                  .optimizer = name,
                                  .lr = r.get_double("optim.lr"),
                                  .weight_decay = r.get_double("optim.weight_decay"),
                                  .beta1 = r.get_double("optim.beta1"),
                                  .beta2 = r.get_double("optim.beta2"),
                                  .eps = r.get_double("optim.eps"),
                                  .momentum = r.get_double("optim.momentum"),
                                  .nesterov = false};
  return optim::make_group_optimizer(all, std::move(params), layout.shard_over);
}

optim::ScheduleConfig schedule_from_recipe(const Recipe& r) {
  return {.kind = r.get_string("optim.schedule"),
          .lr = r.get_double("optim.lr"),
          .min_lr = r.get_double("optim.min_lr"),
          .warmup_steps = r.get_int("optim.warmup_steps"),
          .total_steps = r.get_int("train.steps"),
          .decay_fraction = r.get_double("optim.decay_fraction")};
}

SamplerConfig sampler_config_from_recipe(const Recipe& r) {
  return {.objective = r.get_string("diffusion.objective"),
          .num_timesteps = r.get_int("diffusion.num_timesteps"),
          .sampler = r.get_string("sample.sampler"),
          .steps = r.get_int("sample.steps"),
          .cfg_scale = r.get_double("sample.cfg_scale"),
          .eta = r.get_double("sample.eta"),
          .autocast = r.get_string("train.precision") == "bf16"};
}

void apply_threads(const Recipe& r) {
  const int64_t threads = r.get_int("train.threads");
  if (threads > 0) kernels::cpu::set_num_threads(int(threads));
}

Device device_from_recipe(const Recipe& r) {
  set_matmul_allow_tf32(r.get_bool("train.allow_tf32"));
  // LOOM_ATTENTION picks cuDNN's or loom's attention kernels; a bad value stops the run here,
  // before anything is written, instead of at the first attention call.
  try {
    (void)kernels::cuda::attention_backend();
  } catch (const std::invalid_argument& e) {
    throw Error(e.what());
  }
  if (r.get_string("train.device") == "cpu") return Device::cpu();
  const int count = kernels::cuda::device_count();
  r.check(kernels::cuda::built_with_cuda(), "train.device",
          "is \"cuda\" but this loom was built without CUDA (configure with -DLOOM_CUDA=ON)");
  r.check(count > 0, "train.device", "is \"cuda\" but no CUDA device is visible");
  const int local = parallel::local_rank();
  r.check(local < count, "train.device",
          "is \"cuda\" but this node runs more ranks than it has GPUs (local rank " +
              std::to_string(local) + ", " + std::to_string(count) +
              " GPUs visible): start one rank per GPU");
  return Device::cuda(local);
}

bool autocast_from_recipe(const Recipe& r, Device device) {
  return device.is_cuda() && r.get_string("train.precision") == "bf16";
}

}  // namespace loom::trainer
