#include "parallel/dp_reducer.h"

#include <unordered_set>

namespace loom::parallel {

struct DpReducer::State {
  struct Param {
    std::string name;
    Tensor tensor;
    Tensor view;  // this parameter's slice of its bucket's buffer, shaped like the parameter
    int bucket = 0;
    bool ready = false;  // hooked in the current synchronized pass
  };
  struct Bucket {
    Tensor flat;
    std::vector<int> params;
    int pending = 0;  // parameters not yet ready in this pass
    Work work;
  };

  std::shared_ptr<Communicator> comm;
  std::vector<Param> params;
  std::vector<Bucket> buckets;
  int next_launch = 0;
  bool sync = true;

  // Makes the parameter's .grad the bucket view, holding its current gradient (zero if none).
  void attach(Param& p) {
    const Tensor g = p.tensor.grad();
    if (g.defined() && g.same(p.view)) return;
    LOOM_CHECK(p.tensor.dtype() == p.view.dtype(), "[DpReducer] parameter ", p.name,
               " changed dtype to ", dtype_name(p.tensor.dtype()), " after the reducer was built (",
               dtype_name(p.view.dtype()), "); build the reducer after converting the model");
    if (g.defined()) {
      copy_into(p.view, g);
    } else {
      copy_into(p.view, zeros({}, p.view.dtype(), p.view.device()));
    }
    p.tensor.set_grad(p.view);
  }

  void launch(int b) {
    Bucket& bucket = buckets[size_t(b)];
    // A parameter that got no gradient this pass still takes part: its zeros keep the bucket's
    // layout identical on every rank, and it must receive the other ranks' contributions.
    for (int i : bucket.params) attach(params[size_t(i)]);
    bucket.work = comm->all_reduce_async(bucket.flat, ReduceOp::avg);
  }

  void launch_ready() {
    while (next_launch < int(buckets.size()) && buckets[size_t(next_launch)].pending == 0)
      launch(next_launch++);
  }

  void on_grad_ready(int i) {
    if (!sync) return;
    Param& p = params[size_t(i)];
    LOOM_CHECK(!p.ready, "[DpReducer] parameter ", p.name,
               " got gradients from a second backward pass before finish(); call finish() after "
               "each synchronized backward, or set_sync(false) for accumulation passes");
    attach(p);
    p.ready = true;
    --buckets[size_t(p.bucket)].pending;
    launch_ready();
    // MPI advances non-blocking collectives only inside MPI calls; testing here lets the started
    // buckets move while the rest of backward computes.
    for (int b = 0; b < next_launch; ++b) buckets[size_t(b)].work.is_completed();
  }

  void finish() {
    if (!sync) return;
    while (next_launch < int(buckets.size())) launch(next_launch++);
    for (Bucket& b : buckets) b.work.wait();
    for (Param& p : params) p.ready = false;
    for (Bucket& b : buckets) {
      b.pending = int(b.params.size());
      b.work = Work();
    }
    next_launch = 0;
  }
};

DpReducer::DpReducer(const std::vector<std::pair<std::string, Tensor>>& params,
                     const std::shared_ptr<Communicator>& dp, int64_t bucket_bytes)
    : state_(std::make_shared<State>()) {
  LOOM_CHECK(dp != nullptr, "[DpReducer] the dp communicator is null");
  LOOM_CHECK(bucket_bytes >= 1, "[DpReducer] bucket_bytes must be >= 1, got ", bucket_bytes);
  State& s = *state_;
  std::unordered_set<TensorImpl*> seen;
  int64_t used = 0;  // bytes in the last bucket
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    const auto& [name, t] = *it;
    LOOM_CHECK(t.defined(), "[DpReducer] parameter ", name, " is an undefined tensor");
    if (!t.requires_grad()) continue;
    LOOM_CHECK(t.is_leaf(), "[DpReducer] parameter ", name, " is not a leaf tensor");
    LOOM_CHECK(seen.insert(t.impl_ptr()).second, "[DpReducer] parameter ", name,
               " is listed twice (tied parameters must appear once)");
    const int64_t nbytes = t.numel() * int64_t(dtype_size(t.dtype()));
    bool fresh = s.buckets.empty() || used + nbytes > bucket_bytes;
    if (!fresh) {
      const Tensor& head = s.params[size_t(s.buckets.back().params.front())].tensor;
      fresh = head.dtype() != t.dtype() || head.device() != t.device();
    }
    if (fresh) {
      s.buckets.emplace_back();
      used = 0;
    }
    used += nbytes;
    s.buckets.back().params.push_back(int(s.params.size()));
    s.params.push_back(State::Param{
        .name = name, .tensor = t, .view = Tensor(), .bucket = int(s.buckets.size()) - 1});
  }
  for (State::Bucket& b : s.buckets) {
    const Tensor& first = s.params[size_t(b.params.front())].tensor;
    int64_t numel = 0;
    for (int i : b.params) numel += s.params[size_t(i)].tensor.numel();
    b.flat = zeros({numel}, first.dtype(), first.device());
    int64_t offset = 0;
    for (int i : b.params) {
      State::Param& p = s.params[size_t(i)];
      p.view = b.flat.narrow(0, offset, p.tensor.numel()).view(p.tensor.shape());
      offset += p.tensor.numel();
    }
    b.pending = int(b.params.size());
  }
  s.comm = dp->split(0, dp->rank(), dp->name() + ".reducer");
  std::weak_ptr<State> weak = state_;
  for (size_t i = 0; i < s.params.size(); ++i) {
    s.params[i].tensor.register_hook([weak, i](Tensor&) {
      if (auto state = weak.lock()) state->on_grad_ready(int(i));
    });
  }
}

DpReducer::~DpReducer() {
  for (State::Bucket& b : state_->buckets) {
    try {
      b.work.wait();
    } catch (const std::exception& e) {
      abort_all(e.what());
    }
  }
}

void DpReducer::set_sync(bool sync) {
  State& s = *state_;
  bool in_pass = s.next_launch > 0;
  for (const State::Param& p : s.params) in_pass |= p.ready;
  // Switching mid-pass would leave started reductions that finish() (now a no-op) never completes.
  LOOM_CHECK(!in_pass || sync == s.sync, "[DpReducer] set_sync(", sync ? "true" : "false",
             ") between a synchronized backward and its finish(); call finish() first");
  s.sync = sync;
}
bool DpReducer::sync() const {
  return state_->sync;
}
void DpReducer::finish() {
  state_->finish();
}

std::vector<std::vector<std::string>> DpReducer::bucket_names() const {
  std::vector<std::vector<std::string>> out;
  for (const State::Bucket& b : state_->buckets) {
    out.emplace_back();
    for (int i : b.params) out.back().push_back(state_->params[size_t(i)].name);
  }
  return out;
}

}  // namespace loom::parallel
