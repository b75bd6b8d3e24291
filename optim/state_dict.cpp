#include "optim/state_dict.h"

#include <algorithm>

#include "optim/optimizer.h"

namespace loom::optim {

namespace {

void check_names(const Optimizer& opt, const std::vector<std::string>& names) {
  LOOM_CHECK(names.size() == opt.params().size(), "[optim] ", names.size(),
             " names for the state of ", opt.params().size(), " parameters");
}

}  // namespace

std::string state_key(const std::string& kind, const std::string& name) {
  return kind + "." + name;
}

StateDict state_dict(const Optimizer& opt, const std::vector<std::string>& names) {
  check_names(opt, names);
  StateDict out;
  const std::vector<ParamState> state = opt.state();
  for (size_t i = 0; i < names.size(); ++i) {
    for (const auto& [kind, t] : state[i].tensors)
      out.tensors.emplace_back(state_key(kind, names[i]), t);
    for (const auto& [kind, n] : state[i].counters) out.counters[state_key(kind, names[i])] = n;
  }
  return out;
}

void load_state_dict(Optimizer& opt, const std::vector<std::string>& names, const StateDict& in) {
  check_names(opt, names);
  const std::map<std::string, Tensor> tensors(in.tensors.begin(), in.tensors.end());
  std::vector<ParamState> state(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    const StateKinds kinds = opt.state_kinds(i);
    const Tensor& param = opt.params()[i];
    for (const std::string& kind : kinds.tensors) {
      const auto it = tensors.find(state_key(kind, names[i]));
      if (it == tensors.end()) continue;
      LOOM_CHECK(it->second.shape() == param.shape(), "[optim] checkpoint entry '", it->first,
                 "' has shape ", shape_str(it->second.shape()), ", its parameter ",
                 shape_str(param.shape()));
      state[i].tensors[kind] = it->second;
    }
    for (const std::string& kind : kinds.counters) {
      const auto it = in.counters.find(state_key(kind, names[i]));
      state[i].counters[kind] = it == in.counters.end() ? 0 : it->second;
    }
  }
  opt.load_state(state);
}

void check_param_state(const ParamState& state, const StateKinds& kinds, const Tensor& param,
                       const char* who, const std::string& label) {
  auto known = [](const std::vector<std::string>& list, const std::string& kind) {
    return std::find(list.begin(), list.end(), kind) != list.end();
  };
  for (const auto& [kind, t] : state.tensors) {
    LOOM_CHECK(known(kinds.tensors, kind), "[", who, "] parameter ", label, ": state '", kind,
               "' is not kept by this optimizer");
    LOOM_CHECK(t.defined() && t.shape() == param.shape(), "[", who, "] parameter ", label, " ",
               shape_str(param.shape()), ": state '", kind, "' has shape ",
               t.defined() ? shape_str(t.shape()) : std::string("(undefined)"));
  }
  for (const auto& [kind, n] : state.counters)
    LOOM_CHECK(known(kinds.counters, kind), "[", who, "] parameter ", label, ": counter '", kind,
               "' is not kept by this optimizer");
  for (const std::string& kind : kinds.counters)
    LOOM_CHECK(state.counters.count(kind), "[", who, "] parameter ", label, ": counter '", kind,
               "' is missing");
}

Tensor copy_state_tensor(const Tensor& t, Device device) {
  NoGradGuard no_grad;
  Tensor out = empty(t.shape(), DType::f32, device);
  copy_into(out, t);
  return out;
}

}  // namespace loom::optim
