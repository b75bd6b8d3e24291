#pragma once
// MpiCommunicator: the Communicator backend for host tensors over MPI (Open MPI in practice).
//
// Each instance owns one MPI communicator (a duplicate of MPI_COMM_WORLD for world(), the result
// of MPI_Comm_split for split) and frees it on destruction unless MPI is already finalized. Its
// error handler is MPI_ERRORS_RETURN, so a failing call becomes a loom::Error naming the op, the
// group, the rank, the MPI function, MPI's error string and the file and line of the call, instead
// of MPI's default abort without context. MPI itself is initialized on first use with
// MPI_THREAD_SERIALIZED (any thread may call, one at a time) unless the program initialized it
// already, and in that case finalized at process exit by loom.
//
// Mapping: all_reduce -> MPI_Allreduce (in place), all_reduce_async -> MPI_Iallreduce,
// all_gather -> MPI_Allgather, reduce_scatter -> MPI_Reduce_scatter_block, all_to_all_v ->
// MPI_Alltoallv with counts in rows (a contiguous row datatype keeps counts in int range),
// broadcast -> MPI_Bcast, send/recv -> MPI_Send/MPI_Recv (a short message is an error), barrier
// -> MPI_Barrier. bf16/f16 reductions use user-defined MPI ops that add or compare in float. avg is
// MPI_SUM followed by a division by size() on each rank (after wait() for the async form).
// A single transfer holds at most INT_MAX elements (INT_MAX rows for all_to_all_v); larger tensors
// are rejected with an error rather than truncated.
#include <mpi.h>

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace loom::parallel {

// Initializes MPI if no one has (thread level MPI_THREAD_SERIALIZED) and arranges MPI_Finalize at
// exit. No-op when MPI is running. Throws loom::Error when MPI was already finalized.
void ensure_mpi_initialized();

class MpiCommunicator final : public Communicator {
 public:
  // Initializes MPI when needed and wraps a duplicate of MPI_COMM_WORLD named "world".
  // Collective over MPI_COMM_WORLD.
  static std::shared_ptr<MpiCommunicator> world();
  // Takes ownership of `comm` (an intra-communicator, not MPI_COMM_NULL).
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;

  const char* backend() const override { return "mpi"; }
  MPI_Comm comm() const { return comm_; }

 protected:
  bool supports(Device device) const override { return device.is_cpu(); }
  std::shared_ptr<Communicator> do_split(int color, int key, std::string name) override;
  void do_all_reduce(const Tensor& t, ReduceOp op) override;
  Work do_all_reduce_async(const Tensor& t, ReduceOp op) override;
  void do_all_gather(const Tensor& in, const Tensor& out) override;
  void do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override;
  void do_all_to_all_v(const Tensor& in, const Tensor& out, std::span<const int64_t> send_counts,
                       std::span<const int64_t> recv_counts) override;
  void do_broadcast(const Tensor& t, int root) override;
  void do_send(const Tensor& t, int dst, int tag) override;
  void do_recv(const Tensor& t, int src, int tag) override;
  void do_barrier() override;

 private:
  // Throws "[op] <describe()>: MPI_Xxx failed: <MPI error string> (file:line)" when rc != success.
  void check(int rc, const char* op, const char* call, const char* file, int line) const;
  int count_of(const char* op, const Tensor& t) const;

  MPI_Comm comm_;
};

}  // namespace loom::parallel
