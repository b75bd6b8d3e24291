// CUDA + NCCL builds: the NCCL backend of nccl_communicator.h.
#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"

namespace loom::parallel {

namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::boolean: return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
  }
  return ncclSum;
}

// An event recorded on `from` that `to` waits for (device-side ordering, the host never blocks).
void order_after(cudaStream_t to, cudaStream_t from) {
  cudaEvent_t e = nullptr;
  LOOM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  LOOM_CUDA_CHECK(cudaEventRecord(e, from));
  LOOM_CUDA_CHECK(cudaStreamWaitEvent(to, e, 0));
  LOOM_CUDA_CHECK(cudaEventDestroy(e));  // released once the wait is satisfied
}

// all_reduce_async's handle: wait() orders the compute stream after the NCCL stream's work.
class NcclWork final : public Work::Impl {
 public:
  NcclWork(cudaStream_t nccl, cudaStream_t compute, Tensor keep)
      : compute_(compute), keep_(std::move(keep)) {
    LOOM_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    LOOM_CUDA_CHECK(cudaEventRecord(done_, nccl));
  }
  ~NcclWork() override { cudaEventDestroy(done_); }
  void wait() override { LOOM_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0)); }
  bool test() override { return cudaEventQuery(done_) == cudaSuccess; }

 private:
  cudaStream_t compute_;
  cudaEvent_t done_ = nullptr;
  Tensor keep_;  // the buffer stays alive until the handle is done with
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<Communicator> bootstrap, Device device)
      : Communicator(bootstrap->rank(), bootstrap->size(), bootstrap->name(),
                     bootstrap->world_rank()),
        bootstrap_(std::move(bootstrap)),
        device_(device) {
    LOOM_CHECK(device.is_cuda(), "[nccl] ", describe(), ": needs a CUDA device, got ",
               device.str());
    LOOM_CUDA_CHECK(cudaSetDevice(device.index));
    ncclUniqueId id;
    Tensor id_bytes = zeros({int64_t(sizeof(id))}, DType::boolean);  // bytes, on the host
    if (rank() == 0) {
      check("ncclGetUniqueId", ncclGetUniqueId(&id));
      std::memcpy(id_bytes.raw_data(), &id, sizeof(id));
    }
    bootstrap_->broadcast(id_bytes, 0);
    std::memcpy(&id, id_bytes.raw_data(), sizeof(id));
    check("ncclCommInitRank", ncclCommInitRank(&comm_, size(), id, rank()));
    LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~NcclCommunicator() override {
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  const char* backend() const override { return "nccl"; }

 protected:
  // Device tensors travel over NCCL; host tensors (agreement, counts, logged scalars) over the
  // bootstrap group, so one communicator serves a trainer's mixed traffic.
  bool supports(Device device) const override { return device == device_ || device.is_cpu(); }

  std::shared_ptr<Communicator> do_split(int color, int key, std::string name) override {
    return std::make_shared<NcclCommunicator>(bootstrap_->split(color, key, std::move(name)),
                                              device_);
  }

  void do_all_reduce(const Tensor& t, ReduceOp op) override {
    if (t.device().is_cpu()) return bootstrap_->all_reduce(t, op);
    run("all_reduce", [&] {
      return ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()),
                           nccl_op(op), comm_, stream_);
    });
  }
  Work do_all_reduce_async(const Tensor& t, ReduceOp op) override {
    if (t.device().is_cpu()) return bootstrap_->all_reduce_async(t, op);
    begin();
    check("all_reduce_async",
          ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()),
                        nccl_op(op), comm_, stream_));
    return Work(std::make_unique<NcclWork>(stream_, kernels::cuda::compute_stream(), t));
  }
  void do_all_gather(const Tensor& in, const Tensor& out) override {
    if (in.device().is_cpu()) return bootstrap_->all_gather(in, out);
    run("all_gather", [&] {
      return ncclAllGather(in.raw_data(), out.raw_data(), size_t(in.numel()),
                           nccl_type(in.dtype()), comm_, stream_);
    });
  }
  void do_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    if (in.device().is_cpu()) return bootstrap_->reduce_scatter(in, out, op);
    run("reduce_scatter", [&] {
      return ncclReduceScatter(in.raw_data(), out.raw_data(), size_t(out.numel()),
                               nccl_type(in.dtype()), nccl_op(op), comm_, stream_);
    });
  }
  // One grouped send/recv per peer, rows rank-major on both sides.
  void do_all_to_all_v(const Tensor& in, const Tensor& out, std::span<const int64_t> send_counts,
                       std::span<const int64_t> recv_counts) override {
    if (in.device().is_cpu()) return bootstrap_->all_to_all_v(in, out, send_counts, recv_counts);
    const int64_t row = in.dim() > 0 && in.size(0) > 0 ? in.numel() / in.size(0)
                                                        : (out.size(0) ? out.numel() / out.size(0) : 0);
    const size_t es = dtype_size(in.dtype());
    const ncclDataType_t type = nccl_type(in.dtype());
    run("all_to_all_v", [&] {
      ncclResult_t r = ncclGroupStart();
      int64_t send_off = 0, recv_off = 0;
      for (int peer = 0; peer < size() && r == ncclSuccess; ++peer) {
        const int64_t s = send_counts[size_t(peer)] * row, q = recv_counts[size_t(peer)] * row;
        if (s > 0)
          r = ncclSend(static_cast<const char*>(in.raw_data()) + send_off * es, size_t(s), type,
                       peer, comm_, stream_);
        if (r == ncclSuccess && q > 0)
          r = ncclRecv(static_cast<char*>(out.raw_data()) + recv_off * es, size_t(q), type, peer,
                       comm_, stream_);
        send_off += s;
        recv_off += q;
      }
      const ncclResult_t end = ncclGroupEnd();
      return r != ncclSuccess ? r : end;
    });
  }
  void do_broadcast(const Tensor& t, int root) override {
    if (t.device().is_cpu()) return bootstrap_->broadcast(t, root);
    run("broadcast", [&] {
      return ncclBroadcast(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()),
                           root, comm_, stream_);
    });
  }
  void do_send(const Tensor& t, int dst, int tag) override {
    if (t.device().is_cpu()) return bootstrap_->send(t, dst, tag);
    run("send", [&] {
      return ncclSend(t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()), dst, comm_, stream_);
    });
    LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_));  // blocking, as the interface promises
  }
  void do_recv(const Tensor& t, int src, int tag) override {
    if (t.device().is_cpu()) return bootstrap_->recv(t, src, tag);
    run("recv", [&] {
      return ncclRecv(t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()), src, comm_, stream_);
    });
    LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  // The host group's barrier, after the device work queued so far has finished.
  void do_barrier() override {
    LOOM_CUDA_CHECK(cudaStreamSynchronize(kernels::cuda::compute_stream()));
    bootstrap_->barrier();
  }

 private:
  // The NCCL stream waits for the work queued on the compute stream (the operands' producers).
  void begin() {
    LOOM_CUDA_CHECK(cudaSetDevice(device_.index));
    order_after(stream_, kernels::cuda::compute_stream());
  }
  // A blocking collective: ordered after the compute stream, and the compute stream after it.
  template <class F>
  void run(const char* op, F call) {
    begin();
    check(op, call());
    order_after(kernels::cuda::compute_stream(), stream_);
  }
  void check(const char* op, ncclResult_t r) const {
    if (r != ncclSuccess)
      fail(op, detail::cat("NCCL error: ", ncclGetErrorString(r),
                           r == ncclSystemError || r == ncclRemoteError
                               ? std::string(" (") + ncclGetLastError(comm_) + ")"
                               : std::string()));
  }

  std::shared_ptr<Communicator> bootstrap_;
  Device device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

bool nccl_available() {
  return true;
}

std::shared_ptr<Communicator> nccl_communicator(const std::shared_ptr<Communicator>& bootstrap,
                                                Device device) {
  return std::make_shared<NcclCommunicator>(bootstrap, device);
}

}  // namespace loom::parallel
