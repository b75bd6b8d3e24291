#pragma once
// The NCCL backend: collectives on CUDA tensors, for GPUs in one node or across nodes.
//
// Bootstrap. nccl_communicator(bootstrap, device) is collective over `bootstrap` (a host group:
// MPI under mpirun, Local for one process): rank 0 creates the NCCL unique id, the bootstrap
// broadcasts it, every rank joins with ncclCommInitRank on `device` (its local GPU). split() splits
// the bootstrap group the same way and builds a NCCL communicator for each new group, so a
// ParallelGrid built over a NCCL world gets NCCL groups.
//
// Host tensors. Collectives on host tensors go to the bootstrap group (its matching split), so a
// trainer uses one communicator for device traffic (gradients, tensor/sequence/expert-parallel
// activations) and host traffic (agreement hashes, counts, logged scalars); barrier() waits for
// the compute stream and then for the bootstrap group.
//
// Streams. Each communicator owns a NCCL stream. A collective first makes that stream wait for
// everything already queued on the device's compute stream (an event), runs there, and then
// either makes the compute stream wait for it (blocking calls: later kernels see the result, the
// host does not block) or hands the event to the returned Work (all_reduce_async: wait() orders
// the compute stream after it, so communication overlaps the rest of backward). avg divides on
// the NCCL stream (ncclAvg). Errors throw loom::Error naming the op and the group; NCCL's own
// failures are checked at every call (asynchronous errors surface at the next call or wait()).
//
// Built when CUDA and NCCL are found (LOOM_NCCL); otherwise nccl_communicator() throws saying so.
#include <memory>

#include "parallel/communicator.h"

namespace loom::parallel {

// True when this build has the NCCL backend.
bool nccl_available();
std::shared_ptr<Communicator> nccl_communicator(const std::shared_ptr<Communicator>& bootstrap,
                                                Device device);

}  // namespace loom::parallel
