#pragma once
// Communicator: one group of ranks and the collectives loom runs over it (DESIGN.md "Parallel").
//
// A Communicator is a handle to a group (the world, or a piece of it made by split) with a name
// used in every message ("world", "dp", "tp", ...). The public methods are the same for every
// backend and validate their arguments first: tensors must be defined, contiguous and on a device
// the backend handles (host memory for MPI and Local), shapes and dtypes must agree as each method
// states, and every failure throws loom::Error naming the op, the group and the rank:
//   "[broadcast] group tp (mpi, rank 1 of 2, world rank 3): root 2 is outside [0, 2)"
// Transport errors (an MPI call that returns an error) read the same and add the library's error
// string with the file and line of the call.
//
// Data conventions. Tensors are read and written in row-major order; "rows" are slices along
// dim 0 and the trailing dims must agree between in and out. Gathered and scattered data is
// rank-major: all_gather's out holds rank 0's rows, then rank 1's, ...; reduce_scatter gives rank r
// rows [r * n, (r + 1) * n) of the reduced input. Reductions (sum, avg, max) take f32, f64, bf16,
// f16, i32 and i64 (avg only floating types; bf16/f16 are reduced in float and rounded at each
// step); data movement takes every dtype. avg is the sum divided by size() after the transfer.
//
// Ordering. Collectives are matched by order: every rank of a group must issue the same
// collectives on it in the same sequence (this includes split and the constructor-time splits of
// ParallelGrid). Calls on one Communicator must not run concurrently from several threads.
//
// Asynchrony. all_reduce_async starts the reduction and returns a Work; the tensor must not be
// read or written until wait() returns. A Work that goes out of scope still pending waits for it,
// so a buffer is never freed while a transfer writes it.
//
// Backends. LocalCommunicator is a group of one (every collective is an identity or a copy), so
// each parallel layer runs unchanged in one process. MpiCommunicator (mpi_communicator.h) moves
// host tensors. A NCCL backend for device tensors is to implement the same protected virtuals.
//
// Launch and failure. world_communicator() picks MPI when the process was started by mpirun or
// srun with more than one rank, else Local. A rank that fails while others wait in a collective
// must not simply return from main (its MPI_Finalize would hang): the CLI must call
// abort_all(message) on any error when the world has more than one rank; it prints
// "loom: rank R: <message>" and ends every rank of the job through MPI_Abort.
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/tensor.h"

namespace loom::parallel {

enum class ReduceOp : uint8_t { sum, avg, max };
const char* reduce_op_name(ReduceOp op);

// Handle to an asynchronous collective. Default-constructed: already complete. Move-only.
class Work {
 public:
  // What a backend implements: wait() blocks until the transfer is done and finishes the op (e.g.
  // the division of avg); test() reports completion without blocking (and drives progress).
  class Impl {
   public:
    virtual ~Impl() = default;
    virtual void wait() = 0;
    virtual bool test() = 0;
  };

  Work() = default;
  explicit Work(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
  Work(Work&&) noexcept = default;
  // Waits for the work this handle held before taking the other's.
  Work& operator=(Work&& other) noexcept;
  // Waits when still pending; a failure there ends the job through abort_all (no throwing here).
  ~Work();

  // Blocks until the collective completed; then the tensor holds the result. Idempotent. Throws
  // loom::Error naming the op, group and rank when the transfer failed.
  void wait();
  // True once complete (after which wait() returns at once). Does not block.
  bool is_completed();

 private:
  std::unique_ptr<Impl> impl_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }
  // This process's rank in the world group (the same for every communicator of the process).
  int world_rank() const { return world_rank_; }
  virtual const char* backend() const = 0;  // "mpi", "local"
  // "group tp (mpi, rank 1 of 2, world rank 3)": the context every error message carries.
  std::string describe() const;

  // Collective over this group: ranks with the same color form a new group, ordered by (key, old
  // rank). color >= 0. `name` names the new group in messages (default "<this name>.<color>").
  std::shared_ptr<Communicator> split(int color, int key, std::string name = "");

  // In place: t = op over ranks of t. Same shape and dtype on every rank.
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum);
  // As all_reduce, started now and finished by the returned Work's wait().
  Work all_reduce_async(const Tensor& t, ReduceOp op = ReduceOp::sum);
  // in [n, ...] -> out [size * n, ...], rank-major. Same n on every rank; same dtype.
  void all_gather(const Tensor& in, const Tensor& out);
  // in [size * n, ...] -> out [n, ...]: this rank's rows of the reduction of every rank's in.
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op = ReduceOp::sum);
  // Personalized exchange in rows: rank r sends rows [sum(send_counts[:j]), +send_counts[j]) of
  // in to rank j and receives recv_counts[j] rows from rank j, stored rank-major in out. Counts
  // have size() entries, >= 0 (zero allowed), summing to in.size(0) and out.size(0); send_counts[j]
  // on rank r must equal recv_counts[r] on rank j (not checked: a mismatch is an MPI error or
  // garbage). Trailing dims and dtype of in and out must agree.
  void all_to_all_v(const Tensor& in, const Tensor& out, std::span<const int64_t> send_counts,
                    std::span<const int64_t> recv_counts);
  // In place: every rank's t takes root's values.
  void broadcast(const Tensor& t, int root);
  // Point to point with a peer other than this rank; blocking. Shape and dtype must match the
  // peer's recv/send; tags (>= 0) pair messages between the same peers.
  void send(const Tensor& t, int dst, int tag = 0);
  void recv(const Tensor& t, int src, int tag = 0);
  void barrier();

 protected:
  Communicator(int rank, int size, std::string name, int world_rank);

  // Backend transport, called after validation (tensors contiguous, shapes and counts checked).
  virtual bool supports(Device device) const = 0;
  virtual std::shared_ptr<Communicator> do_split(int color, int key, std::string name) = 0;
  virtual void do_all_reduce(const Tensor& t, ReduceOp op) = 0;
  virtual Work do_all_reduce_async(const Tensor& t, ReduceOp op) = 0;
  virtual void do_all_gather(const Tensor& in, const Tensor& out) = 0;
  virtual void do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) = 0;
  virtual void do_all_to_all_v(const Tensor& in, const Tensor& out,
                               std::span<const int64_t> send_counts,
                               std::span<const int64_t> recv_counts) = 0;
  virtual void do_broadcast(const Tensor& t, int root) = 0;
  virtual void do_send(const Tensor& t, int dst, int tag) = 0;
  virtual void do_recv(const Tensor& t, int src, int tag) = 0;
  virtual void do_barrier() = 0;

  // Throws loom::Error "[op] <describe()>: <message>".
  [[noreturn]] void fail(const char* op, const std::string& message) const;

 private:
  void check_tensor(const char* op, const char* what, const Tensor& t) const;
  void check_reduce(const char* op, const Tensor& t, ReduceOp rop) const;
  // in must have in_rows rows and out in's shape with out_rows rows; `rule` says why, for the
  // message ("out rows = size() * in rows").
  void check_rows(const char* op, const Tensor& in, const Tensor& out, int64_t in_rows,
                  int64_t out_rows, const char* rule) const;

  int rank_, size_;
  std::string name_;
  int world_rank_;
};

// A group of one process: all_reduce and broadcast leave the tensor as it is, all_gather,
// reduce_scatter and all_to_all_v copy in to out, barrier returns, split gives another group of
// one, and send/recv fail (a group of one has no peer). Works on tensors of any device.
class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(std::string name = "world") : Communicator(0, 1, std::move(name), 0) {}
  const char* backend() const override { return "local"; }

 protected:
  bool supports(Device) const override { return true; }
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
};

// -- launch ---------------------------------------------------------------------------------------
// World size announced by the launcher: OMPI_COMM_WORLD_SIZE, else PMI_SIZE, else SLURM_NTASKS,
// else 1. Throws loom::Error for a value that is not a positive integer.
int launched_world_size();
// The world group: an MpiCommunicator (MPI initialized on first use) when the launcher announced
// more than one rank, else a LocalCommunicator. Collective when MPI: every rank calls it, in the
// same order relative to other collectives. Each call returns a new handle (its own MPI
// communicator).
std::shared_ptr<Communicator> world_communicator();
// This process's rank among the ranks on its node (it picks the GPU): OMPI_COMM_WORLD_LOCAL_RANK,
// else SLURM_LOCALID, else MPI_LOCALRANKID, else 0.
int local_rank();
// Prints "loom: rank R: <message>" on stderr and ends the whole job: MPI_Abort(MPI_COMM_WORLD,
// exit_code) when MPI is running, else this process exits with exit_code. R is the world rank
// (from MPI, else the launcher's environment, else 0).
[[noreturn]] void abort_all(const std::string& message, int exit_code = 1);

}  // namespace loom::parallel
