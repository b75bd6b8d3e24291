#include "parallel/mpi_communicator.h"

#include <climits>
#include <cstdlib>
#include <vector>

namespace loom::parallel {

#define LOOM_MPI_CHECK(op, call) check((call), op, #call, __FILE__, __LINE__)

namespace {

std::string mpi_error_message(int rc, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  std::string fn(call);
  fn = fn.substr(0, fn.find('('));
  return detail::cat(fn, " failed: ", std::string(text, size_t(len)), " (", file, ":", line, ")");
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

// bf16/f16 reductions: MPI has no 16-bit float types, so these user ops widen to float per element.
template <class H, bool Max>
void half_reduce(void* in, void* inout, int* len, MPI_Datatype*) {
  const H* a = static_cast<const H*>(in);
  H* b = static_cast<H*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = float(a[i]), y = float(b[i]);
    b[i] = H(Max ? (x > y || x != x ? x : y) : x + y);
  }
}

MPI_Op make_op(MPI_User_function* fn) {
  MPI_Op op;
  LOOM_ASSERT(MPI_Op_create(fn, /*commute=*/1, &op) == MPI_SUCCESS, "MPI_Op_create failed");
  return op;
}

MPI_Datatype mpi_type(DType d) {
  switch (d) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::bf16:
    case DType::f16:
      return MPI_UINT16_T;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
    case DType::boolean:
      return MPI_UINT8_T;
  }
  LOOM_ASSERT(false, "bad dtype");
}

MPI_Op mpi_op(DType d, ReduceOp op) {
  const bool max = op == ReduceOp::max;
  // Created on first use, which is after MPI_Init since a communicator exists by then.
  static const MPI_Op bf16_sum = make_op(&half_reduce<bf16, false>);
  static const MPI_Op bf16_max = make_op(&half_reduce<bf16, true>);
  static const MPI_Op f16_sum = make_op(&half_reduce<f16, false>);
  static const MPI_Op f16_max = make_op(&half_reduce<f16, true>);
  if (d == DType::bf16) return max ? bf16_max : bf16_sum;
  if (d == DType::f16) return max ? f16_max : f16_sum;
  return max ? MPI_MAX : MPI_SUM;
}

template <class T>
void divide_loop(void* data, int64_t n, int divisor) {
  T* p = static_cast<T*>(data);
  for (int64_t i = 0; i < n; ++i) p[i] = T(float(p[i]) / float(divisor));
}

// avg = sum / size, divided (not multiplied by 1/size) so a sum of equal values comes back exact.
void divide_in_place(const Tensor& t, int divisor) {
  if (divisor == 1) return;
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::f32: {
      float* p = t.data<float>();
      for (int64_t i = 0; i < n; ++i) p[i] /= float(divisor);
      break;
    }
    case DType::f64: {
      double* p = t.data<double>();
      for (int64_t i = 0; i < n; ++i) p[i] /= double(divisor);
      break;
    }
    case DType::bf16:
      divide_loop<bf16>(t.raw_data(), n, divisor);
      break;
    case DType::f16:
      divide_loop<f16>(t.raw_data(), n, divisor);
      break;
    default:
      LOOM_ASSERT(false, "avg on a non-floating dtype passed validation");
  }
}

class MpiWork final : public Work::Impl {
 public:
  MpiWork(MPI_Request request, Tensor t, int divisor, std::string context)
      : request_(request), t_(std::move(t)), divisor_(divisor), context_(std::move(context)) {}

  void wait() override {
    if (done_) return;
    finish(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Wait");
  }
  bool test() override {
    if (done_) return true;
    int flag = 0;
    const int rc = MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || flag) finish(rc, "MPI_Test");
    return done_;
  }

 private:
  void finish(int rc, const char* call) {
    done_ = true;
    if (rc != MPI_SUCCESS)
      throw Error(detail::cat("[all_reduce_async] ", context_, ": ",
                              mpi_error_message(rc, call, __FILE__, __LINE__)));
    divide_in_place(t_, divisor_);
  }

  MPI_Request request_;
  Tensor t_;  // keeps the buffer alive while MPI writes it
  int divisor_;
  std::string context_;
  bool done_ = false;
};

int comm_rank(MPI_Comm c) {
  int r = 0;
  LOOM_ASSERT(MPI_Comm_rank(c, &r) == MPI_SUCCESS, "MPI_Comm_rank failed");
  return r;
}
int comm_size(MPI_Comm c) {
  int s = 0;
  LOOM_ASSERT(MPI_Comm_size(c, &s) == MPI_SUCCESS, "MPI_Comm_size failed");
  return s;
}

}  // namespace

void ensure_mpi_initialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  LOOM_CHECK(!finalized, "[mpi] MPI was already finalized; no communicator can be created");
  if (initialized) return;
  int provided = 0;
  const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  LOOM_CHECK(rc == MPI_SUCCESS, "[mpi] MPI_Init_thread failed with code ", rc);
  LOOM_CHECK(provided >= MPI_THREAD_SERIALIZED, "[mpi] the MPI library gives thread level ",
             provided, ", loom needs MPI_THREAD_SERIALIZED");
  std::atexit(finalize_at_exit);
}

std::shared_ptr<MpiCommunicator> MpiCommunicator::world() {
  ensure_mpi_initialized();
  MPI_Comm c = MPI_COMM_NULL;
  // A duplicate keeps loom's traffic apart from any the program sends on MPI_COMM_WORLD itself.
  const int rc = MPI_Comm_dup(MPI_COMM_WORLD, &c);
  LOOM_CHECK(rc == MPI_SUCCESS, "[world_communicator] world rank ", comm_rank(MPI_COMM_WORLD), ": ",
             mpi_error_message(rc, "MPI_Comm_dup", __FILE__, __LINE__));
  return std::make_shared<MpiCommunicator>(c, "world");
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : Communicator(comm_rank(comm), comm_size(comm), std::move(name), comm_rank(MPI_COMM_WORLD)),
      comm_(comm) {
  LOOM_MPI_CHECK("split", MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&comm_);
}

void MpiCommunicator::check(int rc, const char* op, const char* call, const char* file,
                            int line) const {
  if (rc != MPI_SUCCESS) fail(op, mpi_error_message(rc, call, file, line));
}

int MpiCommunicator::count_of(const char* op, const Tensor& t) const {
  if (t.numel() > INT_MAX)
    fail(op, detail::cat("a tensor of ", t.numel(), " elements exceeds MPI's count limit of ",
                         INT_MAX, "; split the transfer"));
  return int(t.numel());
}

std::shared_ptr<Communicator> MpiCommunicator::do_split(int color, int key, std::string name) {
  MPI_Comm c = MPI_COMM_NULL;
  LOOM_MPI_CHECK("split", MPI_Comm_split(comm_, color, key, &c));
  return std::make_shared<MpiCommunicator>(c, std::move(name));
}

void MpiCommunicator::do_all_reduce(const Tensor& t, ReduceOp op) {
  const int n = count_of("all_reduce", t);
  LOOM_MPI_CHECK("all_reduce", MPI_Allreduce(MPI_IN_PLACE, t.raw_data(), n, mpi_type(t.dtype()),
                                             mpi_op(t.dtype(), op), comm_));
  if (op == ReduceOp::avg) divide_in_place(t, size());
}

Work MpiCommunicator::do_all_reduce_async(const Tensor& t, ReduceOp op) {
  const int n = count_of("all_reduce_async", t);
  MPI_Request request = MPI_REQUEST_NULL;
  LOOM_MPI_CHECK("all_reduce_async",
                 MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), n, mpi_type(t.dtype()),
                                mpi_op(t.dtype(), op), comm_, &request));
  return Work(std::make_unique<MpiWork>(request, t, op == ReduceOp::avg ? size() : 1, describe()));
}

void MpiCommunicator::do_all_gather(const Tensor& in, const Tensor& out) {
  const int n = count_of("all_gather", in);
  count_of("all_gather", out);
  const MPI_Datatype type = mpi_type(in.dtype());
  LOOM_MPI_CHECK("all_gather",
                 MPI_Allgather(in.raw_data(), n, type, out.raw_data(), n, type, comm_));
}

void MpiCommunicator::do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) {
  count_of("reduce_scatter", in);
  const int n = count_of("reduce_scatter", out);
  LOOM_MPI_CHECK("reduce_scatter",
                 MPI_Reduce_scatter_block(in.raw_data(), out.raw_data(), n, mpi_type(in.dtype()),
                                          mpi_op(in.dtype(), op), comm_));
  if (op == ReduceOp::avg) divide_in_place(out, size());
}

void MpiCommunicator::do_all_to_all_v(const Tensor& in, const Tensor& out,
                                      std::span<const int64_t> send_counts,
                                      std::span<const int64_t> recv_counts) {
  const char* op = "all_to_all_v";
  if (in.size(0) > INT_MAX || out.size(0) > INT_MAX)
    fail(op, detail::cat("row counts ", in.size(0), " and ", out.size(0),
                         " must fit MPI's int limit ", INT_MAX));
  int64_t row_elems = 1;
  for (int64_t d = 1; d < in.dim(); ++d) row_elems *= in.size(d);
  if (row_elems > INT_MAX) fail(op, detail::cat("rows of ", row_elems, " elements are too long"));
  const int n = size();
  const size_t un = static_cast<size_t>(n);
  std::vector<int> sc(un), rc(un), sd(un), rd(un);
  int soff = 0, roff = 0;
  for (int j = 0; j < n; ++j) {
    sc[size_t(j)] = int(send_counts[size_t(j)]);
    rc[size_t(j)] = int(recv_counts[size_t(j)]);
    sd[size_t(j)] = soff;
    rd[size_t(j)] = roff;
    soff += sc[size_t(j)];
    roff += rc[size_t(j)];
  }
  MPI_Datatype row = MPI_DATATYPE_NULL;
  LOOM_MPI_CHECK(op, MPI_Type_contiguous(int(row_elems), mpi_type(in.dtype()), &row));
  LOOM_MPI_CHECK(op, MPI_Type_commit(&row));
  const int rc_all = MPI_Alltoallv(in.raw_data(), sc.data(), sd.data(), row, out.raw_data(),
                                   rc.data(), rd.data(), row, comm_);
  MPI_Type_free(&row);
  check(rc_all, op, "MPI_Alltoallv", __FILE__, __LINE__);
}

void MpiCommunicator::do_broadcast(const Tensor& t, int root) {
  const int n = count_of("broadcast", t);
  LOOM_MPI_CHECK("broadcast", MPI_Bcast(t.raw_data(), n, mpi_type(t.dtype()), root, comm_));
}

void MpiCommunicator::do_send(const Tensor& t, int dst, int tag) {
  const int n = count_of("send", t);
  LOOM_MPI_CHECK("send", MPI_Send(t.raw_data(), n, mpi_type(t.dtype()), dst, tag, comm_));
}

void MpiCommunicator::do_recv(const Tensor& t, int src, int tag) {
  const int n = count_of("recv", t);
  MPI_Status status;
  LOOM_MPI_CHECK("recv", MPI_Recv(t.raw_data(), n, mpi_type(t.dtype()), src, tag, comm_, &status));
  int got = 0;
  LOOM_MPI_CHECK("recv", MPI_Get_count(&status, mpi_type(t.dtype()), &got));
  if (got != n)
    fail("recv", detail::cat("received ", got, " elements from rank ", src, ", expected ", n,
                             " for shape ", shape_str(t.shape())));
}

void MpiCommunicator::do_barrier() {
  LOOM_MPI_CHECK("barrier", MPI_Barrier(comm_));
}

}  // namespace loom::parallel
