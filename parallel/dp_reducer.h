#pragma once
// DpReducer: averages parameter gradients over the data-parallel group during backward, in
// buckets, so communication overlaps the rest of the backward pass (flashlight's Reducer,
// PyTorch DDP). Reduction policy only: the transport is whatever Communicator it is given.
//
// Buckets. Parameters are assigned in reverse registration order (the order backward usually
// reaches them), filling a bucket until the next parameter would exceed bucket_bytes (a larger
// parameter gets a bucket of its own) or changes dtype. Each bucket owns one flat buffer; each
// parameter's .grad becomes a view into it, so one all-reduce covers the bucket and gradients of
// later passes accumulate straight into the buffer. A gradient found elsewhere (the first pass,
// or after Tensor::zero_grad dropped it) is copied in and the view reattached.
//
// One synchronized pass. The reducer registers a post-accumulate hook on every parameter. When
// a parameter's hook runs (its gradient is final for this backward) it is marked ready; when all
// parameters of a bucket are ready the bucket's all-reduce (ReduceOp::avg) starts asynchronously.
// Buckets start strictly in bucket order, so every rank issues the same collectives in the same
// sequence even if backward visits parameters in another order. finish() starts every bucket not
// yet started (a parameter that got no gradient this pass contributes zeros and receives the
// average), waits for all of them, and leaves each parameter's .grad holding the average over
// the group. Call finish() after every synchronized backward and before reading gradients
// (clipping, optimizer step); running another backward first is an error.
//
// Gradient accumulation. set_sync(false) before the backward of non-final micro-batches: hooks
// do nothing and gradients accumulate locally; set_sync(true) before the last micro-batch's
// backward, whose pass then reduces the accumulated sums. finish() does nothing while sync is off.
//
// Construction is collective over `dp` (the reducer splits a private communicator from it, so its
// asynchronous reductions never interleave with other traffic on dp). Every rank must pass the same
// parameters in the same order. The reducer must outlive the passes it reduces; after it is
// destroyed its hooks stay on the parameters but do nothing. Errors throw loom::Error
// "[DpReducer] ..." naming the parameter.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "parallel/communicator.h"

namespace loom::parallel {

class DpReducer {
 public:
  // params: (name, tensor) as nn::Module::named_parameters() lists them; tensors that do not
  // require grad are skipped. bucket_bytes >= 1.
  DpReducer(const std::vector<std::pair<std::string, Tensor>>& params,
            const std::shared_ptr<Communicator>& dp, int64_t bucket_bytes = int64_t(25) << 20);
  // Waits for reductions still in flight.
  ~DpReducer();
  DpReducer(const DpReducer&) = delete;
  DpReducer& operator=(const DpReducer&) = delete;

  // Whether the next backward passes reduce (true, the default) or only accumulate locally.
  // Throws when a synchronized pass has started (a hook ran) and finish() has not completed it.
  void set_sync(bool sync);
  bool sync() const;
  // Completes the reduction of this pass (see above). No-op while sync is off.
  void finish();

  // Parameter names per bucket, in the order they lie in the bucket's buffer; bucket 0 first.
  std::vector<std::vector<std::string>> bucket_names() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace loom::parallel
