// The NCCL backend at world size 1 on the GPU machine (the multi-GPU runs are their own issue):
// every collective on CUDA tensors against arithmetic, the asynchronous all-reduce ordered before
// the next kernel, and split. Skipped without a GPU or without NCCL in the build.
#include <gtest/gtest.h>

#include "core/loom.h"
#include "kernels/cuda/runtime.h"
#include "parallel/nccl_communicator.h"
#include "tests/gpu/gpu_testing.h"
#include "tests/testing.h"

namespace loom::parallel {
namespace {

using testing::kGpu;

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kernels::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    if (!nccl_available()) GTEST_SKIP() << "built without NCCL";
    comm = nccl_communicator(std::make_shared<LocalCommunicator>(), kGpu);
  }
  std::shared_ptr<Communicator> comm;
};

std::vector<float> host(const Tensor& t) {
  return t.to(Device::cpu()).to_vector<float>();
}

TEST_F(Nccl, CollectivesAtWorldSizeOne) {
  EXPECT_STREQ(comm->backend(), "nccl");
  const Tensor x = from_vector<float>({1, -2, 3, 4.5f, 0, 7}, {3, 2});
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
    const Tensor t = x.to(kGpu);
    comm->all_reduce(t, op);
    EXPECT_EQ(host(t), host(x)) << reduce_op_name(op);
  }
  Tensor gathered = zeros({3, 2}, DType::f32, kGpu);
  comm->all_gather(x.to(kGpu), gathered);
  EXPECT_EQ(host(gathered), host(x));
  Tensor scattered = zeros({3, 2}, DType::f32, kGpu);
  comm->reduce_scatter(x.to(kGpu), scattered);
  EXPECT_EQ(host(scattered), host(x));
  Tensor exchanged = zeros({3, 2}, DType::f32, kGpu);
  const int64_t counts[] = {3};
  comm->all_to_all_v(x.to(kGpu), exchanged, counts, counts);
  EXPECT_EQ(host(exchanged), host(x));
  const Tensor b = x.to(kGpu);
  comm->broadcast(b, 0);
  EXPECT_EQ(host(b), host(x));
  comm->barrier();
  const std::shared_ptr<Communicator> sub = comm->split(0, 0, "sub");
  EXPECT_STREQ(sub->backend(), "nccl");
  EXPECT_EQ(sub->size(), 1);
}

// The result of an asynchronous all-reduce is seen by the next kernel once wait() returned.
TEST_F(Nccl, AsyncAllReduceIsOrderedBeforeLaterKernels) {
  Generator gen(3);
  const Tensor t = randn({1 << 20}, gen, DType::f32, kGpu);
  const Tensor expect = t.clone() * 2.0;
  Work w = comm->all_reduce_async(t, ReduceOp::avg);
  w.wait();
  const Tensor doubled = t * 2.0;
  EXPECT_TRUE(testing::allclose(doubled.to(Device::cpu()), expect.to(Device::cpu()), 0, 0));
}

// Host tensors travel over the bootstrap group (a group of one here), so the trainer's scalars
// and agreement hashes share the communicator with its device traffic.
TEST_F(Nccl, HostTensorsGoOverTheBootstrapGroup) {
  const Tensor t = from_vector<float>({1, 2}, {2});
  comm->all_reduce(t);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 2}));
  const Tensor out = zeros({2});
  comm->all_gather(t, out);
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{1, 2}));
  EXPECT_EQ(out.device(), Device::cpu());
  comm->barrier();
  const auto sub = comm->split(0, 0, "sub");
  sub->broadcast(t, 0);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 2}));
}

}  // namespace
}  // namespace loom::parallel
