// The classifier training loop (task = "classifier"): the ConvNet that scores generated samples,
// trained with cross-entropy on the recipe's data, evaluated on the held-out split at the end.
// Data parallel as the diffusion loop (data_parallel.h): train.batch_size is the global batch,
// split over the dp ranks and train.grad_accum micro-batches; rank 0 writes every output.
#include <chrono>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "core/loom.h"
#include "data/loader.h"
#include "trainer/classifier_score.h"
#include "trainer/data_parallel.h"
#include "trainer/factory.h"
#include "trainer/output/progress.h"
#include "trainer/signals.h"
#include "trainer/train.h"
#include "trainer/training_state.h"

namespace loom::trainer {

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

TrainSummary train_classifier(const Recipe& r, const TrainOptions& options, std::ostream& console) {
  apply_threads(r);
  DataParallel dp(r, ModelSplits{}, Device::cpu());  // the classifier trains on CPUs
  std::ostream& out = dp.log(console);
  const auto train_set = dataset_from_recipe(r, true);
  const auto test_set = dataset_from_recipe(r, false);
  const Shape item = train_set->item_shape();
  r.check(
      item.size() == 3 && item[1] == item[2] && item[1] % 4 == 0, "data.source",
      "the classifier needs square images whose side is a multiple of 4, got " + shape_str(item));
  const uint64_t seed = uint64_t(r.get_int("train.seed"));
  const classifier::ConvNetConfig cfg{
      .in_channels = item[0], .image_size = item[1], .num_classes = train_set->num_classes()};
  Generator init(seed, 1);
  classifier::ConvNet net(cfg, init);
  std::vector<std::string> names;
  std::vector<Tensor> params;
  for (const auto& [name, p] : net.named_parameters()) {
    names.push_back(name);
    params.push_back(p.set_name(name));  // optimizer groups select parameters by name
  }
  dp.check_same_job(r, options, net.named_parameters());
  dp.broadcast_from_root(net);
  dp.reduce_gradients(net);
  RunDir run(r, options, out, dp.is_root());
  auto optimizer = optimizer_from_recipe(r, params, {.shard_over = dp.optimizer_group()});
  data::DataLoader loader(train_set, dp.loader_config({.batch_size = r.get_int("train.batch_size"),
                                                       .seed = seed,
                                                       .hflip = r.get_bool("data.hflip"),
                                                       .prefetch = r.get_int("data.prefetch")}));
  int64_t step = 0;
  if (run.resume_from()) {
    load_training_state(net, *optimizer, names, loader, *run.resume_from());
    step = run.resume_from()->step;
  }
  const int64_t total = r.get_int("train.steps"), log_every = r.get_int("train.log_every");
  const int64_t ckpt_every = r.get_int("train.checkpoint_every");
  out << "loom train: " << r.source() << " -> " << run.path() << "\n  classifier ConvNet on "
      << shape_str(item) << " images, " << cfg.num_classes << " classes, " << net.num_parameters()
      << " parameters; " << train_set->size() << " training images\n  parallel: " << dp.describe()
      << "\n";
  std::string last_ckpt;  // root only
  int64_t last_ckpt_step = -1;
  // Every rank gathers the contents (a sharded optimizer's state is collective); the root writes;
  // every rank waits until the checkpoint is complete.
  auto checkpoint = [&]() {
    last_ckpt_step = step;
    CheckpointContents c;
    c.step = step;
    c.recipe_toml = r.to_toml();
    save_training_state(net, *optimizer, names, loader, &c);
    save_convnet_config(cfg, &c);
    if (dp.is_root()) last_ckpt = run.save(c);
    out << "checkpoint: " << last_ckpt << std::endl;
    dp.barrier();
  };
  install_stop_handlers();
  ProgressLine progress(dp.progress(out));
  double loss_sum = 0, correct = 0, seen = 0;
  int64_t interval_steps = 0;
  Clock::time_point t0 = Clock::now();
  bool interrupted = false;
  const int64_t accum = dp.plan().grad_accum;
  net.train();
  while (step < total) {
    // A signal may reach the ranks at different steps; they stop together.
    if (dp.any_rank(stop_requested())) {
      interrupted = true;
      break;
    }
    optimizer->zero_grad();
    double step_loss = 0, step_correct = 0;
    for (int64_t micro = 0; micro < accum; ++micro) {
      dp.begin_micro_batch(micro);
      const data::Batch b = loader.next();
      const auto o = net.forward(b.images);
      const Tensor loss = cross_entropy(o.logits, b.labels);
      (loss / double(accum)).backward();
      step_loss += loss.item() / double(accum);
      step_correct += sum(eq(argmax(o.logits.detach(), 1), b.labels).to(DType::i64)).item();
    }
    dp.finish_gradients();
    optimizer->set_lr(optim::learning_rate_at(schedule_from_recipe(r), step));
    optimizer->step();
    ++step;
    const std::vector<double> totals = dp.sum({step_loss, step_correct});
    loss_sum += totals[0] / double(dp.size());
    ++interval_steps;
    correct += totals[1];
    seen += double(r.get_int("train.batch_size"));
    if (step % log_every == 0 || step == total) {
      progress.clear();
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      const double n = double(interval_steps);
      out << "step " << std::setw(6) << step << "/" << total << " | loss " << std::setprecision(4)
          << loss_sum / n << " | train acc " << std::setprecision(3) << 100 * correct / seen
          << "% | " << std::setprecision(4) << seen / secs << " img/s" << std::endl;
      if (dp.is_root())
        run.metrics().write({{"step", double(step)},
                             {"loss", loss_sum / n},
                             {"train_accuracy", correct / seen},
                             {"img_per_s", seen / secs}});
      loss_sum = correct = seen = 0;
      interval_steps = 0;
      t0 = Clock::now();
    }
    if (ckpt_every > 0 && step % ckpt_every == 0) checkpoint();
    progress.update(step, total, 0, "");
  }
  progress.clear();
  if (last_ckpt_step != step) checkpoint();
  if (interrupted) {
    out << "interrupted at step " << step << ": continue with --resume\n";
    return {step, true, run.path(), last_ckpt};
  }
  if (!dp.is_root()) return {step, false, run.path(), last_ckpt};
  Tensor images, labels;
  data::load_examples(*test_set, -1, &images, &labels);
  const double acc = score_images(net, images, labels).accuracy;
  out << "held-out accuracy: " << std::setprecision(4) << 100 * acc << "% on " << labels.size(0)
      << " images\n";
  run.metrics().write({{"step", double(step)}, {"test_accuracy", acc}});
  return {step, false, run.path(), last_ckpt};
}

}  // namespace loom::trainer
