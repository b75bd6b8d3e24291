#pragma once
// The main of every multi-rank GoogleTest program (each folder's mpi.cmake): every rank runs every
// test over the world communicator (MPI under mpirun); rank 0 prints the usual report, the others
// print only their failures, prefixed with their rank. Tests must not return early between
// collectives, so that a failure on one rank cannot leave the others waiting.
#include <cstdio>
#include <memory>

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
