// The classifier training loop (task = "classifier"): the ConvNet that scores generated samples,
// trained with cross-entropy on the recipe's data, evaluated on the held-out split at the end.
#include <chrono>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "core/loom.h"
#include "data/loader.h"
#include "trainer/classifier_score.h"
#include "trainer/factory.h"
#include "trainer/output/progress.h"
#include "trainer/signals.h"
#include "trainer/train.h"
#include "trainer/training_state.h"

namespace loom::trainer {

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

TrainSummary train_classifier(const Recipe& r, const TrainOptions& options, std::ostream& out) {
  apply_threads(r);
  const auto train_set = dataset_from_recipe(r, true);
  const auto test_set = dataset_from_recipe(r, false);
  const Shape item = train_set->item_shape();
  r.check(
      item.size() == 3 && item[1] == item[2] && item[1] % 4 == 0, "data.source",
      "the classifier needs square images whose side is a multiple of 4, got " + shape_str(item));
  RunDir run(r, options, out);
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
  auto optimizer = optimizer_from_recipe(r, params);
  data::DataLoader loader(train_set, {.batch_size = r.get_int("train.batch_size"),
                                      .seed = seed,
                                      .hflip = r.get_bool("data.hflip"),
                                      .prefetch = r.get_int("data.prefetch")});
  int64_t step = 0;
  if (run.resume_from()) {
    load_training_state(net, *optimizer, names, loader, *run.resume_from());
    step = run.resume_from()->step;
  }
  const int64_t total = r.get_int("train.steps"), log_every = r.get_int("train.log_every");
  const int64_t ckpt_every = r.get_int("train.checkpoint_every");
  out << "loom train: " << r.source() << " -> " << run.path() << "\n  classifier ConvNet on "
      << shape_str(item) << " images, " << cfg.num_classes << " classes, " << net.num_parameters()
      << " parameters; " << train_set->size() << " training images\n";
  auto checkpoint = [&]() {
    CheckpointContents c;
    c.step = step;
    c.recipe_toml = r.to_toml();
    save_training_state(net, *optimizer, names, loader, &c);
    save_convnet_config(cfg, &c);
    const std::string dir = run.save(c);
    out << "checkpoint: " << dir << std::endl;
    return dir;
  };
  install_stop_handlers();
  ProgressLine progress(out);
  double loss_sum = 0, correct = 0, seen = 0;
  int64_t interval_steps = 0;
  Clock::time_point t0 = Clock::now();
  std::string last_ckpt;
  bool interrupted = false;
  net.train();
  while (step < total) {
    if (stop_requested()) {
      interrupted = true;
      break;
    }
    const data::Batch b = loader.next();
    optimizer->zero_grad();
    const auto o = net.forward(b.images);
    const Tensor loss = cross_entropy(o.logits, b.labels);
    loss.backward();
    optimizer->set_lr(optim::learning_rate_at(schedule_from_recipe(r), step));
    optimizer->step();
    ++step;
    loss_sum += loss.item();
    ++interval_steps;
    correct += sum(eq(argmax(o.logits.detach(), 1), b.labels).to(DType::i64)).item();
    seen += double(b.images.size(0));
    if (step % log_every == 0 || step == total) {
      progress.clear();
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      const double n = double(interval_steps);
      out << "step " << std::setw(6) << step << "/" << total << " | loss " << std::setprecision(4)
          << loss_sum / n << " | train acc " << std::setprecision(3) << 100 * correct / seen
          << "% | " << std::setprecision(4) << seen / secs << " img/s" << std::endl;
      run.metrics().write({{"step", double(step)},
                           {"loss", loss_sum / n},
                           {"train_accuracy", correct / seen},
                           {"img_per_s", seen / secs}});
      loss_sum = correct = seen = 0;
      interval_steps = 0;
      t0 = Clock::now();
    }
    if (ckpt_every > 0 && step % ckpt_every == 0) last_ckpt = checkpoint();
    progress.update(step, total, 0, "");
  }
  progress.clear();
  if (last_ckpt.empty() || !last_ckpt.ends_with("/" + std::to_string(step)))
    last_ckpt = checkpoint();
  if (interrupted) {
    out << "interrupted at step " << step << ": continue with --resume\n";
    return {step, true, run.path(), last_ckpt};
  }
  Tensor images, labels;
  data::load_examples(*test_set, -1, &images, &labels);
  const double acc = score_images(net, images, labels).accuracy;
  out << "held-out accuracy: " << std::setprecision(4) << 100 * acc << "% on " << labels.size(0)
      << " images\n";
  run.metrics().write({{"step", double(step)}, {"test_accuracy", acc}});
  return {step, false, run.path(), last_ckpt};
}

}  // namespace loom::trainer
