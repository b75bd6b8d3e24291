// A job in which one rank fails must end instead of hanging. Run under mpirun with 2 ranks: rank 1
// makes a collective call with a bad argument, catches the loom::Error and calls abort_all, as the
// CLI does; rank 0 meanwhile waits in a barrier that rank 1 never joins. The CTest wrapper checks
// that mpirun exits non-zero within the test timeout and that rank 1's message was printed.
#include <cstdio>

#include "parallel/communicator.h"

int main() {
  using namespace loom::parallel;
  auto world = world_communicator();
  try {
    if (world->rank() == 1) world->broadcast(loom::zeros({2}), /*root=*/world->size());
    world->barrier();
  } catch (const std::exception& e) {
    abort_all(e.what());
  }
  std::printf("rank %d: the barrier returned, so no rank failed\n", world->rank());
  return 0;
}
