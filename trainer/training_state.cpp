#include "trainer/training_state.h"

#include <map>

#include "models/nn/sharded_state.h"
#include "optim/state_dict.h"

namespace loom::trainer {

namespace {

// The parameter name of every tensor entry opt's state can have, by checkpoint key.
std::map<std::string, std::string> param_of_key(const optim::Optimizer& opt,
                                                const std::vector<std::string>& names) {
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < names.size(); ++i)
    for (const std::string& kind : opt.state_kinds(i).tensors)
      out.emplace(optim::state_key(kind, names[i]), names[i]);
  return out;
}

}  // namespace

void save_optimizer_state(const optim::Optimizer& opt, const std::vector<std::string>& names,
                          const ParamShards& shards, CheckpointContents* out) {
  const optim::StateDict state = optim::state_dict(opt, names);
  const auto param_of = param_of_key(opt, names);
  // Entries come in the same order on every rank, so the gathers pair up across a tp group.
  for (const auto& [key, t] : state.tensors)
    out->optimizer.emplace_back(key, shards.whole(param_of.at(key), t));
  for (const auto& [key, n] : state.counters) out->counters[key] = n;
}

void load_optimizer_state(optim::Optimizer& opt, const std::vector<std::string>& names,
                          const ParamShards& shards, const CheckpointContents& in) {
  const auto param_of = param_of_key(opt, names);
  optim::StateDict state{.tensors = {}, .counters = in.counters};
  for (const auto& [key, t] : in.optimizer) {
    const auto it = param_of.find(key);
    // Entries this optimizer does not keep are ignored by load_state_dict; they are not sliced.
    state.tensors.emplace_back(key, it == param_of.end() ? t : shards.local(it->second, t));
  }
  optim::load_state_dict(opt, names, state);
}

std::vector<std::pair<std::string, Tensor>> whole_param_tensors(
    const ParamShards& shards, const std::vector<std::string>& names,
    const std::vector<Tensor>& tensors) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < names.size(); ++i)
    out.emplace_back(names[i], shards.whole(names[i], tensors.at(i)));
  return out;
}

void load_param_tensors(const ParamShards& shards, const std::vector<std::string>& names,
                        const std::vector<std::pair<std::string, Tensor>>& whole,
                        const std::vector<Tensor>& targets, const std::string& what) {
  const std::map<std::string, Tensor> by_name(whole.begin(), whole.end());
  NoGradGuard no_grad;
  for (size_t i = 0; i < names.size(); ++i) {
    const auto it = by_name.find(names[i]);
    LOOM_CHECK(it != by_name.end(), "[checkpoint] no ", what, " entry for parameter ", names[i]);
    copy_into(targets.at(i), shards.local(names[i], it->second));
  }
}

void save_training_state(const nn::Module& model, const optim::Optimizer& opt,
                         const std::vector<std::string>& param_names,
                         const data::DataLoader& loader, CheckpointContents* out) {
  for (const auto& [name, t] : nn::gather_state_dict(model)) out->model.emplace_back(name, t);
  save_optimizer_state(opt, param_names, ParamShards(model), out);
  const data::LoaderPosition pos = loader.position();
  out->counters["data.epoch"] = pos.epoch;
  out->counters["data.batch"] = pos.batch;
}

void load_training_state(nn::Module& model, optim::Optimizer& opt,
                         const std::vector<std::string>& param_names, data::DataLoader& loader,
                         const CheckpointContents& in) {
  nn::StateDict state;
  for (const auto& [name, t] : in.model) state.insert(name, t);
  nn::load_sharded_state_dict(model, state);
  load_optimizer_state(opt, param_names, ParamShards(model), in);
  auto counter = [&](const char* key) {
    auto it = in.counters.find(key);
    LOOM_CHECK(it != in.counters.end(), "[checkpoint] step ", in.step, " has no counter ", key);
    return it->second;
  };
  loader.set_position({counter("data.epoch"), counter("data.batch")});
}

}  // namespace loom::trainer
