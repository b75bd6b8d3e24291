#include "trainer/training_state.h"

#include <map>

#include "optim/adamw.h"
#include "optim/muon.h"
#include "optim/param_groups.h"
#include "optim/sgd.h"

namespace loom::trainer {

namespace {

std::map<std::string, Tensor> by_name(const std::vector<std::pair<std::string, Tensor>>& items) {
  return {items.begin(), items.end()};
}

Tensor checked_state(const std::map<std::string, Tensor>& state, const std::string& key,
                     const Tensor& param) {
  auto it = state.find(key);
  if (it == state.end()) return Tensor();
  LOOM_CHECK(it->second.shape() == param.shape(), "[checkpoint] optimizer state '", key,
             "' has shape ", shape_str(it->second.shape()), ", the parameter ",
             shape_str(param.shape()));
  return it->second.to(DType::f32).contiguous().clone();
}

// The names of a group's parameters, in the group optimizer's order.
std::vector<std::string> group_names(const optim::MultiOptimizer& multi, size_t g,
                                     const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (size_t i : multi.group_indices(g)) out.push_back(names.at(i));
  return out;
}

}  // namespace

void save_optimizer_state(const optim::Optimizer& opt, const std::vector<std::string>& names,
                          CheckpointContents* out) {
  if (auto* multi = dynamic_cast<const optim::MultiOptimizer*>(&opt)) {
    // Each group writes its own optimizer's keys; parameter names are unique, so the groups'
    // entries cannot collide and a group's state is found again by name on resume.
    for (size_t g = 0; g < multi->num_groups(); ++g)
      save_optimizer_state(multi->group_optimizer(g), group_names(*multi, g, names), out);
  } else if (auto* muon = dynamic_cast<const optim::Muon*>(&opt)) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (muon->momentum_buffer(i).defined())
        out->optimizer.emplace_back("muon_momentum." + names[i], muon->momentum_buffer(i));
    }
  } else if (auto* adam = dynamic_cast<const optim::AdamW*>(&opt)) {
    for (size_t i = 0; i < names.size(); ++i) {
      const optim::AdamWState& s = adam->state(i);
      out->counters["optim.step." + names[i]] = s.step;
      if (!s.exp_avg.defined()) continue;
      out->optimizer.emplace_back("exp_avg." + names[i], s.exp_avg);
      out->optimizer.emplace_back("exp_avg_sq." + names[i], s.exp_avg_sq);
    }
  } else if (auto* sgd = dynamic_cast<const optim::Sgd*>(&opt)) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (sgd->momentum_buffer(i).defined())
        out->optimizer.emplace_back("momentum." + names[i], sgd->momentum_buffer(i));
    }
  } else {
    LOOM_FAIL("[checkpoint] cannot save the state of this optimizer");
  }
}

void load_optimizer_state(optim::Optimizer& opt, const std::vector<std::string>& names,
                          const CheckpointContents& in) {
  const auto state = by_name(in.optimizer);
  const auto& params = opt.params();
  if (auto* multi = dynamic_cast<optim::MultiOptimizer*>(&opt)) {
    for (size_t g = 0; g < multi->num_groups(); ++g)
      load_optimizer_state(multi->group_optimizer(g), group_names(*multi, g, names), in);
  } else if (auto* muon = dynamic_cast<optim::Muon*>(&opt)) {
    for (size_t i = 0; i < names.size(); ++i)
      muon->set_momentum_buffer(i, checked_state(state, "muon_momentum." + names[i], params[i]));
  } else if (auto* adam = dynamic_cast<optim::AdamW*>(&opt)) {
    for (size_t i = 0; i < names.size(); ++i) {
      optim::AdamWState& s = adam->state(i);
      auto step = in.counters.find("optim.step." + names[i]);
      s.step = step == in.counters.end() ? 0 : step->second;
      s.exp_avg = checked_state(state, "exp_avg." + names[i], params[i]);
      s.exp_avg_sq = checked_state(state, "exp_avg_sq." + names[i], params[i]);
      LOOM_CHECK(
          s.exp_avg.defined() == s.exp_avg_sq.defined() && (s.step == 0 || s.exp_avg.defined()),
          "[checkpoint] incomplete AdamW state for parameter '", names[i], "'");
    }
  } else if (auto* sgd = dynamic_cast<optim::Sgd*>(&opt)) {
    for (size_t i = 0; i < names.size(); ++i)
      sgd->set_momentum_buffer(i, checked_state(state, "momentum." + names[i], params[i]));
  } else {
    LOOM_FAIL("[checkpoint] cannot load the state of this optimizer");
  }
}

void save_training_state(const nn::Module& model, const optim::Optimizer& opt,
                         const std::vector<std::string>& param_names,
                         const data::DataLoader& loader, CheckpointContents* out) {
  for (const auto& [name, t] : model.state_dict()) out->model.emplace_back(name, t);
  save_optimizer_state(opt, param_names, out);
  const data::LoaderPosition pos = loader.position();
  out->counters["data.epoch"] = pos.epoch;
  out->counters["data.batch"] = pos.batch;
}

void load_training_state(nn::Module& model, optim::Optimizer& opt,
                         const std::vector<std::string>& param_names, data::DataLoader& loader,
                         const CheckpointContents& in) {
  nn::StateDict state;
  for (const auto& [name, t] : in.model) state.insert(name, t);
  model.load_state_dict(state);
  load_optimizer_state(opt, param_names, in);
  auto counter = [&](const char* key) {
    auto it = in.counters.find(key);
    LOOM_CHECK(it != in.counters.end(), "[checkpoint] step ", in.step, " has no counter ", key);
    return it->second;
  };
  loader.set_position({counter("data.epoch"), counter("data.batch")});
}

}  // namespace loom::trainer
