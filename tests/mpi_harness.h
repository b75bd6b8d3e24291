#pragma once
// The main of every multi-rank GoogleTest program (each folder's mpi.cmake): every rank runs every
// test over the world communicator (MPI under mpirun); rank 0 prints the usual report, the others
// print only their failures, prefixed with their rank. Tests must not return early between
// collectives, so that a failure on one rank cannot leave the others waiting.
#include <cstdio>
#include <memory>
#include <string>

#include "core/safetensors.h"
#include "models/nn/sharded_state.h"
#include "optim/optimizer.h"
#include "parallel/communicator.h"
#include "testing.h"

namespace loom::testing {

inline std::shared_ptr<parallel::Communicator>& mpi_world() {
  static std::shared_ptr<parallel::Communicator> world;
  return world;
}

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::printf("[rank %d] %s:%d: Failure\n%s\n", rank_,
                result.file_name() ? result.file_name() : "?", result.line_number(),
                result.summary());
    std::fflush(stdout);
  }

 private:
  int rank_;
};

// What the single-rank vs parallel comparisons share.
// One optimizer step on each side, then both sides' gradients cleared.
inline void step_both(optim::Optimizer& single, optim::Optimizer& parallel) {
  single.step();
  parallel.step();
  single.zero_grad();
  parallel.zero_grad();
}
// Every tensor of `parallel`, gathered whole (collective over its shard groups), against the
// tensor of the same name in `expected`.
inline void expect_whole_state(const nn::Module& parallel, const nn::StateDict& expected,
                               double rtol, double atol) {
  for (const auto& [name, t] : nn::gather_state_dict(parallel))
    EXPECT_TRUE(allclose(t, expected.at(name), rtol, atol)) << name;
}
// `state` written to the safetensors file `path` and read back, as a checkpoint would travel.
inline nn::StateDict through_file(const nn::StateDict& state, const std::string& path) {
  save_safetensors(path, {state.begin(), state.end()});
  nn::StateDict back;
  for (auto& [name, t] : load_safetensors(path).tensors) back.insert(name, t);
  return back;
}

inline int run_mpi_tests(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  mpi_world() = parallel::world_communicator();
  const int rank = mpi_world()->rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const int rc = RUN_ALL_TESTS();
  mpi_world().reset();
  return rc;
}

}  // namespace loom::testing
