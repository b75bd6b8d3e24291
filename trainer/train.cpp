#include "trainer/train.h"

namespace loom::trainer {

TrainSummary train(const Recipe& recipe, const TrainOptions& options, std::ostream& out) {
  if (recipe.get_string("task") == "classifier") return train_classifier(recipe, options, out);
  return train_diffusion(recipe, options, out);
}

}  // namespace loom::trainer
