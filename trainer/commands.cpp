#include "trainer/commands.h"

#include <filesystem>
#include <iomanip>
#include <map>
#include <ostream>
#include <sstream>

#include "core/loom.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/classifier_score.h"
#include "trainer/eval/frechet.h"
#include "trainer/factory.h"
#include "trainer/output/atomic_write.h"
#include "trainer/output/sample_file.h"
#include "trainer/sampling.h"

namespace loom::trainer {

namespace fs = std::filesystem;

LoadedDiT load_dit(const std::string& path, bool use_ema) {
  LoadedDiT out;
  out.dir = resolve_checkpoint(path);
  const CheckpointContents ck = load_checkpoint(out.dir);
  out.recipe = Recipe::from_string(ck.recipe_toml, out.dir + "/recipe.toml");
  LOOM_CHECK(out.recipe->get_string("task") == "diffusion", "[checkpoint] ", out.dir,
             " is a classifier checkpoint, not a diffusion model");
  Generator gen(0);
  out.model = std::make_shared<dit::DiT>(dit_config_from_recipe(*out.recipe), gen);
  nn::StateDict state;
  std::map<std::string, Tensor> ema(ck.ema.begin(), ck.ema.end());
  for (const auto& [name, t] : ck.model) {
    auto it = ema.find(name);
    state.insert(name, use_ema && it != ema.end() ? it->second : t);
  }
  out.model->load_state_dict(state);
  out.model->eval();
  out.step = ck.step;
  return out;
}

namespace {

SamplerConfig sampler_for(const Recipe& r, std::optional<int64_t> steps, std::optional<double> cfg,
                          const std::string& sampler) {
  SamplerConfig c = sampler_config_from_recipe(r);
  if (steps) c.steps = *steps;
  if (cfg) c.cfg_scale = *cfg;
  if (!sampler.empty()) c.sampler = sampler;
  LOOM_CHECK(c.steps >= 1, "[sample] --steps must be >= 1, got ", c.steps);
  return c;
}

void log_progress(std::ostream& out, int64_t step, int64_t total) {
  if (step == total || step % std::max<int64_t>(1, total / 5) == 0)
    out << "  sampling step " << step << "/" << total << std::endl;
}

}  // namespace

void sample_command(const SampleOptions& o, std::ostream& out) {
  LOOM_CHECK(o.per_class >= 1, "[sample] --per-class must be >= 1, got ", o.per_class);
  LoadedDiT loaded = load_dit(o.checkpoint, o.use_ema);
  const int64_t num_classes = loaded.model->config().num_classes;
  std::vector<int64_t> classes = o.classes;
  if (classes.empty())
    for (int64_t c = 0; c < std::min<int64_t>(num_classes, 10); ++c) classes.push_back(c);
  std::vector<int64_t> labels;
  for (int64_t c : classes) {
    LOOM_CHECK(c >= 0 && c < num_classes, "[sample] --class ", c, " out of range: the model has ",
               num_classes, " classes (0..", num_classes - 1, ")");
    for (int64_t i = 0; i < o.per_class; ++i) labels.push_back(c);
  }
  const SamplerConfig c = sampler_for(*loaded.recipe, o.steps, o.cfg_scale, o.sampler);
  out << "sampling " << labels.size() << " images from " << loaded.dir << " (step " << loaded.step
      << (o.use_ema ? ", EMA weights" : ", raw weights") << "): " << c.sampler << " " << c.steps
      << " steps, cfg " << c.cfg_scale << "\n";
  Generator gen(o.seed, 0);
  const Tensor labels_tensor = from_vector(labels, {int64_t(labels.size())});
  const Tensor images =
      generate_images(*loaded.model, c, labels_tensor, gen,
                      [&](int64_t s, int64_t t) { log_progress(out, s, t); });
  const bool png = o.out.size() >= 4 && o.out.compare(o.out.size() - 4, 4, ".png") == 0;
  const std::string stem = png ? o.out.substr(0, o.out.size() - 4) : o.out;
  const std::string written = save_samples(stem, images, labels_tensor, o.per_class);
  out << "wrote " << written << " (" << classes.size() << " rows x " << o.per_class << ")";
  if (!is_image_batch(images))
    out << ": latents with " << images.size(1) << " channels, not images, so a safetensors file";
  out << "\n";
}

EvalResult eval_command(const EvalOptions& o, std::ostream& out) {
  LoadedDiT loaded = load_dit(o.checkpoint);
  const Recipe& r = *loaded.recipe;
  const std::optional<std::string> classifier_path =
      o.classifier.empty() ? find_classifier(r.get_string("eval.classifier"))
                           : std::optional<std::string>(o.classifier);
  LOOM_CHECK(classifier_path.has_value(),
             "[eval] no classifier: train one with `loom train "
             "recipes/fmnist_classifier.toml` (it writes runs/fmnist_classifier) or pass "
             "--classifier PATH");
  auto net = load_classifier(*classifier_path);
  const int64_t per_class = o.per_class.value_or(r.get_int("eval.per_class"));
  LOOM_CHECK(per_class >= 1, "[eval] --per-class must be >= 1, got ", per_class);
  const int64_t classes = loaded.model->config().num_classes;
  LOOM_CHECK(net->config().num_classes == classes, "[eval] the classifier has ",
             net->config().num_classes, " classes, the model ", classes);
  const SamplerConfig c =
      sampler_for(r, o.steps.value_or(r.get_int("eval.steps")), o.cfg_scale, "");
  const Tensor labels = class_grid_labels(classes, per_class);
  out << "eval " << loaded.dir << " (step " << loaded.step << "): " << labels.size(0) << " images, "
      << c.sampler << " " << c.steps << " steps, cfg " << c.cfg_scale << "; classifier "
      << *classifier_path << "\n";
  // Generate in chunks so memory stays bounded.
  Generator gen(o.seed, 0);
  std::vector<Tensor> chunks;
  const int64_t chunk = 250;
  for (int64_t b = 0; b < labels.size(0); b += chunk) {
    const Tensor l = labels.slice(0, b, std::min(labels.size(0), b + chunk)).contiguous();
    chunks.push_back(generate_images(*loaded.model, c, l, gen));
    out << "  generated " << std::min(labels.size(0), b + chunk) << "/" << labels.size(0)
        << std::endl;
  }
  const Tensor images = cat(chunks, 0);
  const ClassifierScores gen_scores = score_images(*net, images, labels);
  const auto test_set = dataset_from_recipe(r, false);
  Tensor real, real_labels;
  data::load_examples(*test_set, labels.size(0), &real, &real_labels);
  const int64_t n_real = real.size(0);
  const ClassifierScores real_scores = score_images(*net, real, real_labels);
  EvalResult result;
  result.images = labels.size(0);
  result.class_consistency = gen_scores.accuracy;
  result.frechet_distance =
      frechet_distance(fit_gaussian(gen_scores.features), fit_gaussian(real_scores.features));
  std::ostringstream json;
  json << std::setprecision(6) << "{\"step\": " << loaded.step << ", \"images\": " << result.images
       << ", \"class_consistency\": " << result.class_consistency
       << ", \"frechet_distance\": " << result.frechet_distance
       << ", \"real_accuracy\": " << real_scores.accuracy << ", \"sampler\": \"" << c.sampler
       << "\", \"steps\": " << c.steps << ", \"cfg_scale\": " << c.cfg_scale << "}\n";
  const fs::path run_dir = fs::path(loaded.dir).parent_path().parent_path();
  const std::string json_path =
      (run_dir / ("eval_" + std::to_string(loaded.step) + ".json")).string();
  write_file_atomic(json_path, json.str(), "eval");
  out << std::setprecision(4) << "class consistency: " << 100 * result.class_consistency
      << "% (the classifier scores " << 100 * real_scores.accuracy << "% on real test images)\n"
      << "Frechet distance (classifier features, " << result.images << " generated vs " << n_real
      << " real): " << result.frechet_distance << "\n"
      << "wrote " << json_path << "\n";
  return result;
}

void inspect_command(const std::string& path, std::ostream& out) {
  const std::string dir = resolve_checkpoint(path);
  const CheckpointContents ck = load_checkpoint(dir);
  out << "checkpoint " << dir << "\n  step " << ck.step << "\n";
  int64_t total = 0;
  out << "  parameters and buffers:\n";
  for (const auto& [name, t] : ck.model) {
    out << "    " << std::left << std::setw(48) << name << " " << std::setw(20)
        << shape_str(t.shape()) << " " << dtype_name(t.dtype()) << "\n";
    total += t.numel();
  }
  out << "  " << ck.model.size() << " tensors, " << total
      << " elements; EMA: " << (ck.ema.empty() ? "no" : "yes")
      << "; optimizer tensors: " << ck.optimizer.size() << "\n";
  for (const auto& [name, v] : ck.counters)
    if (name.rfind("optim.step.", 0) != 0) out << "  " << name << " = " << v << "\n";
  for (const auto& [name, v] : ck.scalars) out << "  " << name << " = " << v << "\n";
  out << "  recipe:\n";
  std::istringstream recipe(ck.recipe_toml);
  for (std::string line; std::getline(recipe, line);)
    if (!line.empty() && line[0] != '#') out << "    " << line << "\n";
}

}  // namespace loom::trainer
