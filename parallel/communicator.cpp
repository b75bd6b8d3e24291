#include "parallel/communicator.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <numeric>

#include "parallel/mpi_communicator.h"

namespace loom::parallel {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
  }
  return "?";
}

// -- Work -----------------------------------------------------------------------------------------

Work& Work::operator=(Work&& other) noexcept {
  if (this != &other) {
    // Dropping a pending request would leave MPI writing into a buffer nobody waits for.
    Work previous;
    previous.impl_ = std::move(impl_);
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Work::~Work() {
  if (!impl_) return;
  try {
    impl_->wait();
  } catch (const std::exception& e) {
    abort_all(e.what());
  }
}

void Work::wait() {
  if (impl_) impl_->wait();
}

bool Work::is_completed() {
  return !impl_ || impl_->test();
}

// -- Communicator: validation shared by every backend ---------------------------------------------

Communicator::Communicator(int rank, int size, std::string name, int world_rank)
    : rank_(rank), size_(size), name_(std::move(name)), world_rank_(world_rank) {}

std::string Communicator::describe() const {
  return detail::cat("group ", name_, " (", backend(), ", rank ", rank_, " of ", size_,
                     ", world rank ", world_rank_, ")");
}

void Communicator::fail(const char* op, const std::string& message) const {
  throw Error(detail::cat("[", op, "] ", describe(), ": ", message));
}

void Communicator::check_tensor(const char* op, const char* what, const Tensor& t) const {
  if (!t.defined()) fail(op, detail::cat(what, " is an undefined tensor"));
  if (!t.is_contiguous())
    fail(op, detail::cat(what, " must be contiguous, got shape ", shape_str(t.shape()),
                         " with strides ", shape_str(t.strides()), " (call .contiguous())"));
  if (!supports(t.device()))
    fail(op, detail::cat(what, " is on ", t.device().str(), ", which the ", backend(),
                         " backend does not handle"));
}

void Communicator::check_reduce(const char* op, const Tensor& t, ReduceOp rop) const {
  const DType d = t.dtype();
  if (d == DType::boolean)
    fail(op, detail::cat("cannot reduce (", reduce_op_name(rop), ") a bool tensor"));
  if (rop == ReduceOp::avg && !is_floating(d))
    fail(op, detail::cat("avg needs a floating dtype, got ", dtype_name(d), " (use sum)"));
}

void Communicator::check_rows(const char* op, const Tensor& in, const Tensor& out, int64_t in_rows,
                              int64_t out_rows, const char* rule) const {
  if (in.dtype() != out.dtype())
    fail(op,
         detail::cat("in has dtype ", dtype_name(in.dtype()), ", out ", dtype_name(out.dtype())));
  if (in.dim() < 1 || out.dim() < 1)
    fail(op, detail::cat("in and out need a leading dim of rows, got shapes ",
                         shape_str(in.shape()), " and ", shape_str(out.shape())));
  Shape want_out = in.shape();
  want_out[0] = out_rows;
  if (in.size(0) != in_rows || out.shape() != want_out)
    fail(op, detail::cat("in has shape ", shape_str(in.shape()), " and out ",
                         shape_str(out.shape()), ", expected ", in_rows,
                         " rows in and out of shape ", shape_str(want_out), " (", rule, ")"));
}

std::shared_ptr<Communicator> Communicator::split(int color, int key, std::string name) {
  if (color < 0) fail("split", detail::cat("color must be >= 0, got ", color));
  if (name.empty()) name = detail::cat(name_, ".", color);
  return do_split(color, key, std::move(name));
}

void Communicator::all_reduce(const Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", "t", t);
  check_reduce("all_reduce", t, op);
  do_all_reduce(t, op);
}

Work Communicator::all_reduce_async(const Tensor& t, ReduceOp op) {
  check_tensor("all_reduce_async", "t", t);
  check_reduce("all_reduce_async", t, op);
  return do_all_reduce_async(t, op);
}

void Communicator::all_gather(const Tensor& in, const Tensor& out) {
  check_tensor("all_gather", "in", in);
  check_tensor("all_gather", "out", out);
  const int64_t n = in.dim() > 0 ? in.size(0) : 0;
  check_rows("all_gather", in, out, n, n * size_, "out rows = group size * in rows");
  do_all_gather(in, out);
}

void Communicator::reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) {
  check_tensor("reduce_scatter", "in", in);
  check_tensor("reduce_scatter", "out", out);
  check_reduce("reduce_scatter", in, op);
  const int64_t n = out.dim() > 0 ? out.size(0) : 0;
  check_rows("reduce_scatter", in, out, n * size_, n, "in rows = group size * out rows");
  do_reduce_scatter(in, out, op);
}

void Communicator::all_to_all_v(const Tensor& in, const Tensor& out,
                                std::span<const int64_t> send_counts,
                                std::span<const int64_t> recv_counts) {
  const char* op = "all_to_all_v";
  check_tensor(op, "in", in);
  check_tensor(op, "out", out);
  if (int64_t(send_counts.size()) != size_ || int64_t(recv_counts.size()) != size_)
    fail(op,
         detail::cat("send_counts and recv_counts need ", size_, " entries (one per rank), got ",
                     send_counts.size(), " and ", recv_counts.size()));
  for (int j = 0; j < size_; ++j) {
    if (send_counts[size_t(j)] < 0 || recv_counts[size_t(j)] < 0)
      fail(op, detail::cat("counts must be >= 0, got send ", send_counts[size_t(j)], " and recv ",
                           recv_counts[size_t(j)], " for rank ", j));
  }
  const int64_t sent = std::accumulate(send_counts.begin(), send_counts.end(), int64_t(0));
  const int64_t received = std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t(0));
  check_rows(op, in, out, sent, received, "rows = sum of send_counts and of recv_counts");
  do_all_to_all_v(in, out, send_counts, recv_counts);
}

void Communicator::broadcast(const Tensor& t, int root) {
  check_tensor("broadcast", "t", t);
  if (root < 0 || root >= size_)
    fail("broadcast", detail::cat("root ", root, " is outside [0, ", size_, ")"));
  do_broadcast(t, root);
}

void Communicator::send(const Tensor& t, int dst, int tag) {
  check_tensor("send", "t", t);
  if (dst < 0 || dst >= size_ || dst == rank_ || tag < 0)
    fail("send", detail::cat("destination ", dst, " must be another rank in [0, ", size_,
                             ") and tag ", tag, " >= 0"));
  do_send(t, dst, tag);
}

void Communicator::recv(const Tensor& t, int src, int tag) {
  check_tensor("recv", "t", t);
  if (src < 0 || src >= size_ || src == rank_ || tag < 0)
    fail("recv", detail::cat("source ", src, " must be another rank in [0, ", size_, ") and tag ",
                             tag, " >= 0"));
  do_recv(t, src, tag);
}

void Communicator::barrier() {
  do_barrier();
}

// -- LocalCommunicator ----------------------------------------------------------------------------

namespace {
void copy_whole(const Tensor& out, const Tensor& in) {
  const size_t nbytes = size_t(in.numel()) * dtype_size(in.dtype());
  if (nbytes != 0 && out.raw_data() != in.raw_data())
    copy_bytes(out.raw_data(), out.device(), in.raw_data(), in.device(), nbytes);
}
}  // namespace

std::shared_ptr<Communicator> LocalCommunicator::do_split(int, int, std::string name) {
  return std::make_shared<LocalCommunicator>(std::move(name));
}
void LocalCommunicator::do_all_reduce(const Tensor&, ReduceOp) {}
Work LocalCommunicator::do_all_reduce_async(const Tensor&, ReduceOp) {
  return Work();
}
void LocalCommunicator::do_all_gather(const Tensor& in, const Tensor& out) {
  copy_whole(out, in);
}
void LocalCommunicator::do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp) {
  copy_whole(out, in);
}
void LocalCommunicator::do_all_to_all_v(const Tensor& in, const Tensor& out,
                                        std::span<const int64_t>, std::span<const int64_t>) {
  copy_whole(out, in);
}
void LocalCommunicator::do_broadcast(const Tensor&, int) {}
// Unreachable: validation rejects every peer of a group of one.
void LocalCommunicator::do_send(const Tensor&, int, int) {
  LOOM_ASSERT(false);
}
void LocalCommunicator::do_recv(const Tensor&, int, int) {
  LOOM_ASSERT(false);
}
void LocalCommunicator::do_barrier() {}

// -- launch ---------------------------------------------------------------------------------------

namespace {
// First of `names` that is set: its value parsed as an integer >= min_value; `fallback` if none.
int env_int(std::initializer_list<const char*> names, int fallback, int min_value) {
  for (const char* name : names) {
    const char* v = std::getenv(name);
    if (!v) continue;
    char* end = nullptr;
    const long x = std::strtol(v, &end, 10);
    LOOM_CHECK(end != v && *end == '\0' && x >= min_value && x <= (1L << 30), "[launch] ", name,
               "='", v, "' is not an integer >= ", min_value);
    return int(x);
  }
  return fallback;
}
}  // namespace

int launched_world_size() {
  return env_int({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}, 1, 1);
}

int local_rank() {
  return env_int({"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}, 0, 0);
}

std::shared_ptr<Communicator> world_communicator() {
  if (launched_world_size() > 1) return MpiCommunicator::world();
  return std::make_shared<LocalCommunicator>("world");
}

void abort_all(const std::string& message, int exit_code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  const bool mpi_running = initialized && !finalized;
  int rank = 0;
  if (mpi_running) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  } else {
    // Not throwing from here: a malformed variable must not hide the message being reported.
    for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}) {
      if (const char* v = std::getenv(name)) {
        rank = std::atoi(v);
        break;
      }
    }
  }
  std::fprintf(stderr, "loom: rank %d: %s\n", rank, message.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  if (mpi_running) MPI_Abort(MPI_COMM_WORLD, exit_code);
  // Without MPI there is no job to take down; _Exit skips static destructors and atexit handlers
  // that could block on state the failure left behind.
  std::_Exit(exit_code);
}

}  // namespace loom::parallel
