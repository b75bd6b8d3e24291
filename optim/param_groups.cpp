#include "optim/param_groups.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <sstream>

#include "optim/adamw.h"
#include "optim/sgd.h"
#include "optim/sharded.h"

namespace loom::optim {

namespace {

// Items of an error message: the first few, then how many there are in all, so a model with
// hundreds of unmatched parameters still gives a readable line.
std::string limited_list(const std::vector<std::string>& items) {
  constexpr size_t kShown = 8;
  std::string out;
  for (size_t i = 0; i < items.size() && i < kShown; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > kShown) out += ", ... (" + std::to_string(items.size()) + " in all)";
  return out;
}

std::unique_ptr<Optimizer> make_optimizer(const ParamGroupSpec& s, std::vector<Tensor> params) {
  if (s.optimizer == "adamw") {
    return std::make_unique<AdamW>(std::move(params), AdamWConfig{.lr = s.lr,
                                                                  .beta1 = s.beta1,
                                                                  .beta2 = s.beta2,
                                                                  .eps = s.eps,
                                                                  .weight_decay = s.weight_decay});
  }
  if (s.optimizer == "muon") {
    return std::make_unique<Muon>(std::move(params), MuonConfig{.lr = s.lr,
                                                                .momentum = s.momentum,
                                                                .nesterov = s.nesterov,
                                                                .weight_decay = s.weight_decay,
                                                                .scale = s.muon_scale,
                                                                .splits = s.muon_splits});
  }
  if (s.optimizer == "sgd") {
    return std::make_unique<Sgd>(std::move(params), SgdConfig{.lr = s.lr,
                                                              .momentum = s.momentum,
                                                              .weight_decay = s.weight_decay,
                                                              .nesterov = s.nesterov});
  }
  LOOM_FAIL("[param_groups] group '", s.name, "': unknown optimizer '", s.optimizer,
            "' (expected adamw, muon or sgd)");
}

}  // namespace

std::unique_ptr<Optimizer> make_group_optimizer(const ParamGroupSpec& spec,
                                                std::vector<Tensor> params,
                                                const std::shared_ptr<parallel::Communicator>& dp) {
  if (!dp) return make_optimizer(spec, std::move(params));
  const ShardCost cost = spec.optimizer == "muon" ? ShardCost::newton_schulz : ShardCost::numel;
  return std::make_unique<ShardedOptimizer>(
      std::move(params),
      [spec](std::vector<Tensor> p) { return make_optimizer(spec, std::move(p)); }, cost, dp);
}

bool glob_match(std::string_view pattern, std::string_view name) {
  // Greedy scan with one backtrack point: on a mismatch, let the most recent '*' absorb one more
  // character. Linear in practice, and no recursion on long names.
  size_t p = 0, n = 0, star = std::string_view::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p;
      ++n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::vector<std::string> split_patterns(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view item = text.substr(start, end - start);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front())))
      item.remove_prefix(1);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back())))
      item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    start = end + 1;
  }
  return out;
}

std::vector<std::vector<size_t>> assign_param_groups(const std::vector<ParamGroupSpec>& groups,
                                                     const std::vector<std::string>& names) {
  LOOM_CHECK(!groups.empty(), "[param_groups] no parameter groups given");
  std::map<std::string, size_t> seen_groups;
  size_t catch_all = groups.size();
  for (size_t g = 0; g < groups.size(); ++g) {
    LOOM_CHECK(seen_groups.emplace(groups[g].name, g).second,
               "[param_groups] two groups are named '", groups[g].name, "'");
    if (!groups[g].patterns.empty()) continue;
    LOOM_CHECK(catch_all == groups.size(), "[param_groups] groups '", groups[catch_all].name,
               "' and '", groups[g].name,
               "' both have no patterns; only one group can take the remaining parameters");
    catch_all = g;
  }
  std::map<std::string, size_t> seen_names;
  for (size_t i = 0; i < names.size(); ++i) {
    LOOM_CHECK(!names[i].empty(), "[param_groups] parameter #", i,
               " has no name; groups are chosen by name");
    LOOM_CHECK(seen_names.emplace(names[i], i).second, "[param_groups] parameters #",
               seen_names[names[i]], " and #", i, " are both named '", names[i], "'");
  }

  std::vector<std::vector<size_t>> members(groups.size());
  std::vector<std::string> unmatched, duplicated;
  for (size_t i = 0; i < names.size(); ++i) {
    std::vector<size_t> hits;
    for (size_t g = 0; g < groups.size(); ++g) {
      const auto& pats = groups[g].patterns;
      if (std::any_of(pats.begin(), pats.end(),
                      [&](const std::string& pat) { return glob_match(pat, names[i]); }))
        hits.push_back(g);
    }
    if (hits.size() > 1) {
      std::string which;
      for (size_t h : hits) which += (which.empty() ? "'" : ", '") + groups[h].name + "'";
      duplicated.push_back("'" + names[i] + "' (groups " + which + ")");
      continue;
    }
    if (hits.empty() && catch_all == groups.size()) {
      unmatched.push_back("'" + names[i] + "'");
      continue;
    }
    members[hits.empty() ? catch_all : hits[0]].push_back(i);
  }
  LOOM_CHECK(duplicated.empty(), "[param_groups] parameters matched by more than one group: ",
             limited_list(duplicated));
  LOOM_CHECK(unmatched.empty(),
             "[param_groups] parameters matched by no group: ", limited_list(unmatched),
             "; add a pattern, or a group without patterns for the rest");
  for (size_t g = 0; g < groups.size(); ++g) {
    std::string pats;
    for (const std::string& p : groups[g].patterns) pats += (pats.empty() ? "" : ", ") + p;
    LOOM_CHECK(g == catch_all || !members[g].empty(), "[param_groups] group '", groups[g].name,
               "' (patterns ", pats, ") matches no parameter");
  }
  return members;
}

MultiOptimizer::MultiOptimizer(std::vector<Tensor> params, std::vector<ParamGroupSpec> groups,
                               double base_lr, std::shared_ptr<parallel::Communicator> dp)
    : Optimizer(std::move(params), base_lr, "param_groups"), base_lr_(base_lr) {
  LOOM_CHECK(base_lr > 0, "[param_groups] base learning rate must be > 0, got ", base_lr,
             " (group rates are scaled by lr / base_lr)");
  std::vector<std::string> names;
  for (const Tensor& p : params_) names.push_back(p.name());
  std::vector<std::vector<size_t>> members = assign_param_groups(groups, names);
  slot_.resize(params_.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    Group group{std::move(groups[g]), std::move(members[g]), nullptr};
    std::vector<Tensor> sub;
    for (size_t k = 0; k < group.indices.size(); ++k) {
      sub.push_back(params_[group.indices[k]]);
      slot_[group.indices[k]] = {g, k};
    }
    try {
      group.optimizer = make_group_optimizer(group.spec, std::move(sub), dp);
    } catch (const Error& e) {
      // Which group's settings were bad is the useful part for a recipe author.
      LOOM_FAIL("[param_groups] group '", group.spec.name, "': ", e.what());
    }
    groups_.push_back(std::move(group));
  }
}

void MultiOptimizer::step() {
  for (size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].optimizer->set_lr(group_lr(g));
    groups_[g].optimizer->step();
  }
}

StateKinds MultiOptimizer::state_kinds(size_t i) const {
  const auto [g, k] = slot_.at(i);
  return groups_[g].optimizer->state_kinds(k);
}

std::vector<ParamState> MultiOptimizer::state() const {
  std::vector<ParamState> out(params_.size());
  for (const Group& group : groups_) {
    std::vector<ParamState> s = group.optimizer->state();
    for (size_t k = 0; k < s.size(); ++k) out[group.indices[k]] = std::move(s[k]);
  }
  return out;
}

void MultiOptimizer::load_state(const std::vector<ParamState>& state) {
  check_state_count(state);
  for (const Group& group : groups_) {
    std::vector<ParamState> s;
    for (size_t i : group.indices) s.push_back(state[i]);
    group.optimizer->load_state(s);
  }
}

int64_t MultiOptimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const Group& group : groups_) bytes += group.optimizer->state_bytes();
  return bytes;
}

std::string describe_groups(const MultiOptimizer& opt) {
  const std::vector<std::string> header = {"group",  "optimizer", "lr",      "weight_decay",
                                           "params", "elements",  "examples"};
  std::vector<std::vector<std::string>> rows = {header};
  const auto& params = opt.params();
  for (size_t g = 0; g < opt.num_groups(); ++g) {
    const ParamGroupSpec& s = opt.group(g);
    const auto& idx = opt.group_indices(g);
    int64_t elements = 0;
    for (size_t i : idx) elements += params[i].numel();
    constexpr size_t kExamples = 3;
    std::string examples;
    for (size_t k = 0; k < idx.size() && k < kExamples; ++k)
      examples += (k ? ", " : "") + params[idx[k]].name() + " " + shape_str(params[idx[k]].shape());
    if (idx.size() > kExamples) examples += ", ...";
    std::string optimizer = s.optimizer;
    if (s.optimizer == "muon") optimizer += std::string(" (") + muon_scale_name(s.muon_scale) + ")";
    std::ostringstream lr, wd;
    lr << opt.group_lr(g);
    wd << s.weight_decay;
    rows.push_back({s.name, optimizer, lr.str(), wd.str(), std::to_string(idx.size()),
                    std::to_string(elements), examples});
  }
  std::vector<size_t> width(header.size(), 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::ostringstream out;
  for (const auto& row : rows) {
    std::string line = "   ";
    for (size_t c = 0; c < row.size(); ++c) {
      line += " " + row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size(), ' ') + " ";
    }
    out << line << "\n";
  }
  return out.str();
}

}  // namespace loom::optim
