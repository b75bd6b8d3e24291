// The diffusion training loop: DiT / DiT-MoE on DDPM (ε-prediction + learned-variance vb term)
// or rectified flow, AdamW + EMA, periodic sample grids scored by the classifier when one exists.
//
// Reproducibility: every random draw comes from a Generator with its own stream (init, data
// order and flips inside the loader, timesteps, noise, label dropout, sampling); a checkpoint
// stores their offsets, the loader position, the model, the EMA and the optimizer state, so a
// resumed run on the CPU continues with bit-identical losses.
//
// Data parallelism (data_parallel.h): a step's timesteps, noise and label dropout are drawn for
// the whole global batch on every rank, and each rank's micro-batch takes its rows of them, so
// the losses do not depend on parallel.dp or train.grad_accum (beyond the order of float sums;
// the MoE balance loss is the exception: it is a statistic of each micro-batch's tokens).
//
// Tensor, sequence and expert parallelism (docs/PARALLEL.md): the DiT is built with the grid's
// tp, sp and ep groups; the ranks of a replica share a dp rank, hence the same rows, and every one
// of them gets the whole output and computes the same loss; the ranks of an ep group keep their
// own rows and the MoE layers exchange tokens between them. Gradients are clipped by the norm of
// the whole model (nn::sharded_grad_norm). Checkpoints and sample grids use whole tensors: the
// model, EMA and optimizer state of sharded parameters (tp slices, expert slices) are gathered
// (collectively, on every rank), and the root samples with a single-rank copy of the model loaded
// from the gathered EMA.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "core/loom.h"
#include "data/loader.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/runtime.h"
#include "models/diffusion/gaussian_diffusion.h"
#include "models/diffusion/rectified_flow.h"
#include "models/dit/flops.h"
#include "models/nn/sharded_state.h"
#include "optim/ema.h"
#include "optim/grad_clip.h"
#include "optim/param_groups.h"
#include "optim/step_guard.h"
#include "trainer/classifier_score.h"
#include "trainer/data_parallel.h"
#include "trainer/factory.h"
#include "trainer/output/sample_file.h"
#include "trainer/output/plot.h"
#include "trainer/output/progress.h"
#include "trainer/param_shards.h"
#include "trainer/sampling.h"
#include "trainer/signals.h"
#include "trainer/step_report.h"
#include "trainer/train.h"
#include "trainer/training_state.h"

namespace loom::trainer {

namespace {

// Generator streams of one run (the seed is train.seed).
enum Stream : uint64_t { kInit = 1, kTimesteps = 2, kNoise = 3, kLabelDrop = 4 };

std::string mib(double bytes) {
  return fmt(bytes / double(1 << 20), 3) + " MiB";
}

// What the parallel checks need to know about a DiT: its heads, experts, the width of a dense
// MLP (MoE experts are not split by tp) and its tokens.
ModelSplits model_splits(const dit::DiTConfig& cfg) {
  const int64_t grid = cfg.input_size / cfg.patch_size;
  return {.num_heads = cfg.num_heads,
          .num_experts = cfg.num_experts,
          .mlp_hidden = cfg.num_experts ? 0 : int64_t(double(cfg.hidden_size) * cfg.mlp_ratio),
          .num_tokens = grid * grid};
}

class DiffusionJob {
 public:
  DiffusionJob(const Recipe& r, const TrainOptions& options, std::ostream& out)
      : r_(r),
        cfg_(dit_config_from_recipe(r)),
        device_(device_from_recipe(r)),
        dp_(r, model_splits(cfg_), device_),
        out_(dp_.log(out)),
        train_set_(dataset_from_recipe(r, true)),
        seed_(uint64_t(r.get_int("train.seed"))),
        t_gen_(seed_, kTimesteps),
        noise_gen_(seed_, kNoise),
        label_gen_(seed_, kLabelDrop) {
    check_data_matches_model(r, *train_set_, cfg_.in_channels, cfg_.input_size, cfg_.num_classes);
    autocast_ = autocast_from_recipe(r, device_);
    Generator init(seed_, kInit);
    model_ = std::make_shared<dit::DiT>(cfg_, init, dp_.model_parallel());
    model_->set_activation_checkpointing(r.get_bool("train.activation_checkpointing"));
    shards_ = ParamShards(*model_);
    for (const auto& [name, p] : model_->named_parameters()) {
      names_.push_back(name);
      params_.push_back(p);
      p.set_name(name);
    }
    dp_.check_same_job(r, options, model_->named_parameters());
    // Every rank drew the same initial weights from the same seed; the broadcast makes that a
    // guarantee instead of an assumption about the initializers. It runs over dp (expert stacks
    // over edp): the ranks of a replica, and of an ep group, hold different slices.
    dp_.broadcast_from_root(*model_);
    model_->to(device_);  // before anything holds gradients or optimizer state
    dp_.reduce_gradients(*model_);
    run_ = std::make_unique<RunDir>(r, options, out_, dp_.is_root());
    optimizer_ = optimizer_from_recipe(
        r, params_, {.shard_over = dp_.optimizer_group(), .muon_splits = shards_.muon_splits()});
    ema_ = std::make_unique<optim::Ema>(params_, r.get_double("train.ema_decay"));
    loader_ = std::make_unique<data::DataLoader>(
        train_set_, dp_.loader_config({.batch_size = r.get_int("train.batch_size"),
                                       .seed = seed_,
                                       .shuffle = true,
                                       .hflip = r.get_bool("data.hflip"),
                                       .prefetch = r.get_int("data.prefetch")}));
    if (r.get_string("diffusion.objective") == "ddpm") {
      ddpm_ = std::make_unique<diffusion::GaussianDiffusion>(diffusion::GaussianDiffusionConfig{
          .num_timesteps = r.get_int("diffusion.num_timesteps"), .learn_sigma = cfg_.learn_sigma});
    }
    if (dp_.is_root()) {  // a single-rank model: it samples alone, from the whole EMA
      sample_model_ = std::make_shared<dit::DiT>(cfg_, init);
      sample_model_->to(device_);
      load_classifier_if_any();
    }
    if (run_->resume_from()) restore(*run_->resume_from());
  }

  TrainSummary run() {
    const int64_t total = r_.get_int("train.steps");
    const int64_t log_every = r_.get_int("train.log_every");
    const int64_t sample_every = r_.get_int("train.sample_every");
    const int64_t ckpt_every = r_.get_int("train.checkpoint_every");
    print_header();
    install_stop_handlers();
    ProgressLine progress(dp_.progress(out_));
    IntervalStats iv;
    const Clock::time_point session_start = Clock::now();
    const int64_t first_step = step_;
    bool interrupted = false;
    while (step_ < total) {
      // A signal may reach the ranks at different steps; they stop together.
      if (dp_.any_rank(stop_requested())) {
        interrupted = true;
        break;
      }
      const bool stepped = train_step(iv);
      if (stepped && !state_reported_) report_optimizer_state();
      if (step_ % log_every == 0 || step_ == total) {
        progress.clear();
        if (dp_.is_root()) log(iv, total, session_start, first_step);
        iv = IntervalStats{};
      }
      if (sample_every > 0 && step_ % sample_every == 0) sample_grid();
      if (ckpt_every > 0 && step_ % ckpt_every == 0) checkpoint();
      const double rate = double(step_ - first_step) / std::max(seconds_since(session_start), 1e-9);
      progress.update(step_, total, rate > 0 ? double(total - step_) / rate : 0,
                      "loss " + fmt(last_loss_));
    }
    progress.clear();
    if (last_ckpt_step_ != step_) checkpoint();
    if (interrupted) {
      out_ << "interrupted at step " << step_ << ": checkpoint " << last_ckpt_
           << " written; continue with --resume\n";
    } else {
      if (sample_every == 0 || step_ % sample_every != 0) sample_grid();
      if (dp_.is_root()) {
        write_loss_plot();
        out_ << "done: " << step_ << " steps in " << format_duration(seconds_since(session_start))
             << "; run directory " << run_->path() << "\n";
      }
    }
    return {step_, interrupted, run_->path(), last_ckpt_};
  }

 private:
  // The classifier that scores sample grids (root only), when one fits this model's images.
  void load_classifier_if_any() {
    if (auto classifier = find_classifier(r_.get_string("eval.classifier"))) {
      auto net = load_classifier(*classifier);
      const classifier::ConvNetConfig& cc = net->config();
      const bool fits = cc.in_channels == cfg_.in_channels && cc.image_size == cfg_.input_size &&
                        cc.num_classes == cfg_.num_classes;
      // The default classifier is only a convenience: one made for other images is skipped.
      r_.check(fits || r_.get_string("eval.classifier").empty(), "eval.classifier",
               "the classifier at " + *classifier + " scores " + std::to_string(cc.in_channels) +
                   "x" + std::to_string(cc.image_size) + "x" + std::to_string(cc.image_size) +
                   " images of " + std::to_string(cc.num_classes) + " classes, not this model's");
      if (fits) {
        classifier_ = net;
        classifier_path_ = *classifier;
      }
    }
  }

  void print_header() {
    out_ << "loom train: " << r_.source() << " -> " << run_->path() << "\n"
         << "  model: " << (cfg_.num_experts ? "DiT-MoE" : "DiT") << " depth " << cfg_.depth
         << ", width " << cfg_.hidden_size << ", " << cfg_.num_heads << " heads, patch "
         << cfg_.patch_size << ", " << model_->num_tokens() << " tokens";
    if (cfg_.num_experts)
      out_ << ", " << cfg_.num_experts << " experts top-" << cfg_.top_k << " + "
           << cfg_.num_shared_experts << " shared";
    out_ << "; " << dit::count_parameters(cfg_) << " parameters\n"
         << "  data: " << r_.get_string("data.source") << ", " << train_set_->size()
         << " images; objective " << r_.get_string("diffusion.objective") << "; global batch "
         << r_.get_int("train.batch_size") << "; " << kernels::cpu::num_threads()
         << " threads per rank\n"
         << "  parallel: " << dp_.describe() << "\n";
    if (auto* groups = dynamic_cast<const optim::MultiOptimizer*>(optimizer_.get()))
      out_ << "  optimizer groups:\n" << optim::describe_groups(*groups);
    if (dp_.optimizer_group())
      out_ << "  optimizer state sharded over the " << dp_.size()
           << " dp ranks (optim.shard_state)\n";
    if (classifier_) {
      out_ << "  sample quality scored by the classifier at " << classifier_path_ << "\n";
    } else {
      out_ << "  no classifier found (train one with: loom train recipes/fmnist_classifier.toml): "
              "samples are not scored\n";
    }
  }

  // A step's random draws for the whole global batch (rows in DataParallel's order).
  struct StepDraws {
    Tensor t;           // [batch_size] DDPM steps (i64) or rectified-flow times (f32)
    Tensor noise;       // [batch_size, C, H, W]
    Tensor label_drop;  // [batch_size] bool: replace the label by the null class; undefined: none
  };

  // The same draws, in the same order, as the one-rank loop makes for a batch of batch_size:
  // GaussianDiffusion's timesteps then noise, RectifiedFlow::training_losses' t then noise from one
  // generator, and the label embedder's dropout draw (LabelEmbedder::drop_labels).
  StepDraws draw_step() {
    const int64_t batch = r_.get_int("train.batch_size");
    Shape shape = train_set_->item_shape();
    shape.insert(shape.begin(), batch);
    StepDraws d;
    if (ddpm_) {
      d.t = ddpm_->sample_timesteps(batch, t_gen_);
    } else {
      d.t = diffusion::RectifiedFlow().sample_t(batch, noise_gen_);
    }
    d.noise = randn(shape, noise_gen_);
    if (model_->y_embedder().has_null_class())
      d.label_drop = bernoulli({batch}, cfg_.class_dropout_prob, label_gen_);
    return d;
  }

  // One optimizer step; false when it was skipped (non-finite loss or gradients).
  bool train_step(IntervalStats& iv) {
    const int64_t accum = dp_.plan().grad_accum;
    model_->train();
    optimizer_->zero_grad();
    const StepDraws draws = draw_step();
    double loss = 0, mse = 0, vb = 0, aux_total = 0;
    std::vector<double> counts;  // [layer * num_experts + expert]: tokens routed this step
    for (int64_t micro = 0; micro < accum; ++micro) {
      dp_.begin_micro_batch(micro);
      const data::Batch batch = loader_->next();
      const Tensor x0 = batch.images.to(device_);
      const Tensor t = dp_.local_rows(draws.t, micro).to(device_);
      const Tensor noise = dp_.local_rows(draws.noise, micro).to(device_);
      Tensor labels = batch.labels;
      if (draws.label_drop.defined()) {
        const double null_class = double(model_->y_embedder().null_class());
        labels =
            where(dp_.local_rows(draws.label_drop, micro), full_like(labels, null_class), labels);
      }
      labels = labels.to(device_);
      Tensor aux;
      std::vector<Tensor> layer_counts;
      const diffusion::ModelFn fn = [&](const Tensor& x_t, const Tensor& t_model) {
        dit::DiT::Output o = model_->forward(x_t, t_model, labels);
        aux = o.aux_loss;
        layer_counts = std::move(o.expert_counts);
        return o.out;
      };
      AutocastGuard autocast(DType::bf16, autocast_);
      const diffusion::Losses l =
          ddpm_ ? ddpm_->training_losses(fn, x0, t, noise)
                : diffusion::RectifiedFlow().training_losses(fn, x0, t, noise);
      Tensor objective = l.loss;
      if (aux.defined()) objective = objective + aux;
      (objective / double(accum)).backward();
      loss += l.loss.item() / double(accum);
      if (l.mse.defined()) mse += l.mse.item() / double(accum);
      if (l.vb.defined()) vb += l.vb.item() / double(accum);
      if (aux.defined()) aux_total += aux.item() / double(accum);
      add_layer_counts(counts, layer_counts);
      iv.images += x0.size(0) * dp_.size();
    }
    dp_.finish_gradients();
    // Every rank logs, and decides on, the mean over the global batch.
    const std::vector<double> mean = dp_.average({loss, mse, vb, aux_total});
    loss = mean[0];
    iv.add_expert_counts(dp_.sum(counts), cfg_.num_experts);
    // The global norm (f64 sum of squares) is finite exactly when every gradient element is, so
    // it doubles as the non-finite check; decided over every rank all the same.
    const double norm = nn::sharded_grad_norm(*model_);
    if (!admit(optim::all_finite({}, {loss, norm}, &dp_.world()), loss)) {
      optimizer_->zero_grad();
      ++step_;
      return false;
    }
    const double gn = optim::clip_grads_to(params_, norm, r_.get_double("train.grad_clip"));
    optimizer_->set_lr(optim::learning_rate_at(schedule_from_recipe(r_), step_));
    optimizer_->step();
    ema_->update();
    ++step_;
    last_loss_ = loss;
    iv.loss += loss;
    iv.mse += mean[1];
    iv.vb += mean[2];
    iv.aux += mean[3];
    iv.grad_norm += gn;
    ++iv.steps;
    return true;
  }

  // Whether step step_ + 1 runs (finite: every rank's gradients and the loss are finite); warns
  // about a skipped step and throws, naming the recipe key, after train.max_nonfinite_steps of
  // them in a row.
  bool admit(bool finite, double loss) {
    if (!finite)
      out_ << "warning: step " << step_ + 1 << ": non-finite "
           << (std::isfinite(loss) ? "gradient" : "loss") << "; update skipped ("
           << guard_.consecutive_skips() + 1 << " in a row)\n";
    try {
      return guard_.admit(finite, step_ + 1);
    } catch (const Error& e) {
      LOOM_FAIL(e.what(), "; train.max_nonfinite_steps = ", r_.get_int("train.max_nonfinite_steps"),
                ": lower optim.lr or enable train.grad_clip");
    }
  }

  // The optimizer state each rank holds (after the first step, which creates it): the sharding of
  // optim.shard_state and tensor parallelism shows here. Collective.
  void report_optimizer_state() {
    state_reported_ = true;
    const std::vector<double> bytes = dp_.all_ranks(double(optimizer_->state_bytes()));
    const auto [lo, hi] = std::minmax_element(bytes.begin(), bytes.end());
    double total = 0;
    for (double b : bytes) total += b;
    out_ << "  optimizer state: " << mib(*hi) << " per rank";
    if (bytes.size() > 1)
      out_ << " (largest; smallest " << mib(*lo) << "), " << mib(total) << " over " << bytes.size()
           << " ranks";
    out_ << "\n";
  }

  void log(const IntervalStats& iv, int64_t total, Clock::time_point session_start,
           int64_t first_step) {
    const bool cuda = device_.is_cuda();
    const StepContext c{
        .step = step_,
        .total = total,
        .lr = optimizer_->lr(),
        .elapsed = elapsed_before_ + seconds_since(session_start),
        .steps_per_s = double(step_ - first_step) / std::max(seconds_since(session_start), 1e-9),
        .vb_terms = ddpm_ && cfg_.learn_sigma,
        .skipped_steps = skipped_steps(),
        .train_flops_per_image =
            cuda ? std::optional<double>(dit::train_flops_per_image(cfg_)) : std::nullopt,
        .peak_bytes = cuda ? kernels::cuda::memory_stats(device_.index).peak_allocated : 0};
    const StepLine line = format_step_line(iv, c);
    out_ << line.text << std::endl;
    run_->metrics().write(line.fields);
  }

  // Non-finite steps skipped over the whole run, resumed sessions included.
  int64_t skipped_steps() const { return skipped_before_ + guard_.total_skips(); }

  // EMA weights into the sampling model, then a grid with one row per class and fixed noise.
  // Collective (the EMA of sharded parameters is gathered); the root samples.
  void sample_grid() {
    const auto ema = whole_param_tensors(shards_, names_, ema_->averages());
    if (!dp_.is_root()) return;
    nn::StateDict weights;
    for (const auto& [name, t] : ema) weights.insert(name, t);
    sample_model_->load_state_dict(weights, /*strict=*/false);  // the buffers are not averaged
    const int64_t per_class = r_.get_int("sample.per_class");
    const int64_t classes = std::min<int64_t>(cfg_.num_classes, 10);
    const Tensor labels = class_grid_labels(classes, per_class);
    Generator gen(uint64_t(r_.get_int("sample.seed")), 0);
    const auto t0 = Clock::now();
    const Tensor images =
        generate_images(*sample_model_, sampler_config_from_recipe(r_), labels, gen);
    std::ostringstream stem;
    stem << run_->samples_dir() << "/step_" << std::setw(7) << std::setfill('0') << step_;
    const std::string path = save_samples(stem.str(), images, labels, per_class);
    std::ostringstream msg;
    msg << "samples: " << path << " (" << fmt(seconds_since(t0), 3) << " s)";
    if (classifier_) {
      const double cc = score_images(*classifier_, images, labels).accuracy;
      msg << ", class consistency " << fmt(100 * cc, 3) << "%";
      run_->metrics().write({{"step", double(step_)}, {"class_consistency", cc}});
    }
    out_ << msg.str() << std::endl;
  }

  // Every rank gathers the contents; the root writes; every rank waits until it is complete.
  void checkpoint() {
    last_ckpt_step_ = step_;
    const CheckpointContents contents = checkpoint_contents();
    if (dp_.is_root()) last_ckpt_ = run_->save(contents);
    out_ << "checkpoint: " << last_ckpt_ << std::endl;
    dp_.barrier();
  }

  // Collective (see training_state.h).
  CheckpointContents checkpoint_contents() const {
    CheckpointContents c;
    c.step = step_;
    c.recipe_toml = r_.to_toml();
    save_training_state(*model_, *optimizer_, names_, *loader_, &c);
    c.ema = whole_param_tensors(shards_, names_, ema_->averages());
    c.counters["nonfinite_total"] = skipped_steps();
    c.counters["ema.updates"] = ema_->num_updates();
    c.generators["timesteps"] = generator_state(t_gen_);
    c.generators["noise"] = generator_state(noise_gen_);
    c.generators["label_dropout"] = generator_state(label_gen_);
    c.scalars["elapsed_seconds"] = elapsed_before_ + seconds_since(start_);
    c.scalars["last_loss"] = last_loss_;
    return c;
  }

  void restore(const CheckpointContents& c) {
    load_training_state(*model_, *optimizer_, names_, *loader_, c);
    load_param_tensors(shards_, names_, c.ema, ema_->averages(), "EMA");
    t_gen_ = restore_generator(c.generators.at("timesteps"));
    noise_gen_ = restore_generator(c.generators.at("noise"));
    label_gen_ = restore_generator(c.generators.at("label_dropout"));
    skipped_before_ = c.counters.count("nonfinite_total") ? c.counters.at("nonfinite_total") : 0;
    ema_->set_num_updates(c.counters.count("ema.updates") ? c.counters.at("ema.updates") : c.step);
    elapsed_before_ = c.scalars.count("elapsed_seconds") ? c.scalars.at("elapsed_seconds") : 0;
    step_ = c.step;
  }

  void write_loss_plot() {
    std::vector<double> steps;
    std::vector<std::vector<double>> series(1);
    for (const auto& row : read_metrics(run_->path() + "/metrics.jsonl")) {
      auto s = row.find("step"), l = row.find("loss");
      if (s == row.end() || l == row.end()) continue;
      steps.push_back(s->second);
      series[0].push_back(l->second);
    }
    const std::string path = run_->path() + "/loss.svg";
    save_loss_plot_svg(path, steps, series, {"training loss"}, "loom: " + r_.source());
    out_ << "loss plot: " << path << "\n";
  }

  const Recipe& r_;
  dit::DiTConfig cfg_;
  Device device_;
  DataParallel dp_;
  std::ostream& out_;  // the console on the root, nothing elsewhere
  std::shared_ptr<data::Dataset> train_set_;
  uint64_t seed_;
  Generator t_gen_, noise_gen_, label_gen_;
  bool autocast_ = false;  // bf16 autocast around the forward (train.precision on CUDA)
  std::shared_ptr<dit::DiT> model_;
  ParamShards shards_;                      // model_'s tensor- and expert-parallel parameters
  std::shared_ptr<dit::DiT> sample_model_;  // root only, single-rank
  std::unique_ptr<RunDir> run_;
  std::vector<std::string> names_;
  std::vector<Tensor> params_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<optim::Ema> ema_;
  std::unique_ptr<data::DataLoader> loader_;
  std::unique_ptr<diffusion::GaussianDiffusion> ddpm_;
  std::shared_ptr<classifier::ConvNet> classifier_;
  std::string classifier_path_;
  int64_t step_ = 0;
  int64_t last_ckpt_step_ = -1;
  std::string last_ckpt_;  // root only
  optim::StepGuard guard_{std::max<int64_t>(1, r_.get_int("train.max_nonfinite_steps"))};
  int64_t skipped_before_ = 0;  // skipped steps of the sessions before a resume
  bool state_reported_ = false;
  double last_loss_ = 0, elapsed_before_ = 0;
  Clock::time_point start_ = Clock::now();
};

}  // namespace

TrainSummary train_diffusion(const Recipe& recipe, const TrainOptions& options, std::ostream& out) {
  apply_threads(recipe);
  DiffusionJob job(recipe, options, out);
  return job.run();
}

}  // namespace loom::trainer
