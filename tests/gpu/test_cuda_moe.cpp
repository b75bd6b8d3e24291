// The MoE kernels on CUDA against their CPU twins: the device expert sort equals the host sort
// exactly (capacity cuts, experts without assignments, i32 and i64 ids, several chunks);
// grouped_linear and swiglu forward and gradients in f32 (tight), bf16 autocast (loose) and f64
// (the per-problem path, and a finite-difference check on the device); and a whole MoELayer
// forward and backward. Skipped (and reported as skipped) without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "core/loom.h"
#include "core/ops/expert_rows.h"
#include "core/ops/moe_ops.h"
#include "kernels/cuda/runtime.h"
#include "models/moe/moe_layer.h"
#include "tests/gpu/gpu_testing.h"
#include "tests/testing.h"

namespace loom {
namespace {

using testing::expect_twin;
using testing::kGpu;
using testing::rel_error;
using testing::uniform;
using Fn = testing::TwinFn;

using CudaMoE = testing::CudaTest;

// f32, f64, and bf16 (through autocast from f32 operands when `autocast`, else bf16 operands).
void expect_twin_all(const std::string& what, const Fn& f, const std::vector<Tensor>& inputs,
                     bool autocast) {
  expect_twin(what, f, inputs, DType::f32, 2e-5);
  expect_twin(what, f, inputs, DType::f64, 1e-12);
  expect_twin(what, f, inputs, DType::bf16, 2e-2, autocast);
}

void expect_same_dispatch(const Tensor& ids, int64_t n_experts, int64_t capacity) {
  SCOPED_TRACE("ids " + shape_str(ids.shape()) + " " + dtype_name(ids.dtype()) + ", E " +
               std::to_string(n_experts) + ", capacity " + std::to_string(capacity));
  const ExpertDispatch host = sort_by_expert(ids, n_experts, capacity);
  const ExpertDispatch dev = sort_by_expert(ids.to(kGpu), n_experts, capacity);
  ASSERT_EQ(dev.order.device(), kGpu);
  EXPECT_EQ(dev.counts, host.counts);
  EXPECT_EQ(dev.dropped, host.dropped);
  EXPECT_EQ(dev.routed.to_vector<int64_t>(), host.routed.to_vector<int64_t>());
  EXPECT_EQ(dev.order.to_vector<int64_t>(), host.order.to_vector<int64_t>());
  EXPECT_EQ(dev.token.to_vector<int64_t>(), host.token.to_vector<int64_t>());
  EXPECT_EQ(dev.position.to_vector<int64_t>(), host.position.to_vector<int64_t>());
}

TEST_F(CudaMoE, ExpertSortEqualsTheHostSort) {
  Generator gen(3, 0);
  // Sizes around the kernel's 1024-assignment chunks and 4-chunk blocks; the last expert is never
  // drawn, so one expert has no assignment.
  for (int64_t n : {1, 7, 512, 2049, 20000}) {
    for (int64_t k : {1, 2}) {
      for (int64_t e : {1, 3, 8, 64}) {
        const Tensor ids = randint(0, std::max<int64_t>(e - 1, 1), {n, k}, gen);
        const int64_t fair = (n * k + e - 1) / e;
        for (int64_t capacity : {int64_t(0), int64_t(1), fair, 2 * fair}) {
          expect_same_dispatch(ids, e, capacity);
          if (n == 2049) expect_same_dispatch(ids.to(DType::i32), e, capacity);
        }
      }
    }
  }
  // Every assignment to one expert (the busiest warp groups), with capacity.
  expect_same_dispatch(zeros({3000, 2}, DType::i64), 4, 1500);
}

TEST_F(CudaMoE, ExpertSortNamesAnIdOutOfRange) {
  const Tensor ids = from_vector<int64_t>({0, 1, 2, 5, 1, 7}, {3, 2});
  testing::expect_error([&] { sort_by_expert(ids.to(kGpu), 4); },
                        {"expert id 5 at assignment 3", "out of range [0, 4)"});
}

TEST_F(CudaMoE, GroupedLinearMatchesCpu) {
  struct Case {
    std::vector<int64_t> counts;
    int64_t d, f;
  };
  // Awkward sizes, empty experts, one expert, and more experts than one grouped call takes.
  std::vector<int64_t> many(130, 3);
  many[7] = 0;
  const std::vector<Case> cases = {
      {{37, 0, 5, 64}, 40, 24}, {{0, 9}, 16, 33}, {{70}, 31, 65}, {many, 8, 16}};
  uint64_t seed = 10;
  for (const Case& c : cases) {
    int64_t m = 0;
    for (int64_t r : c.counts) m += r;
    const int64_t l = int64_t(c.counts.size());
    const std::vector<Tensor> in = {uniform({m, c.d}, -1, 1, ++seed),
                                    uniform({l, c.f, c.d}, -1, 1, ++seed)};
    expect_twin_all(
        "grouped_linear L=" + std::to_string(l),
        [&](auto& x) { return grouped_linear(x[0], x[1], c.counts); }, in,
        /*autocast=*/true);
  }
}

TEST_F(CudaMoE, GroupedLinearAnExpertWithoutRowsGetsZeros) {
  // Row widths of 32 bytes, so the grouped cuBLAS call (not the per-problem path) runs.
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = uniform({6, 16}).to(dtype).to(kGpu).set_requires_grad();
    const Tensor w = uniform({3, 16, 16}).to(dtype).to(kGpu).set_requires_grad();
    sum(grouped_linear(x, w, {4, 0, 2})).backward();
    EXPECT_EQ(amax(abs(w.grad().select(0, 1))).item(), 0.0) << dtype_name(dtype);
    EXPECT_GT(amax(abs(w.grad().select(0, 2))).item(), 0.0) << dtype_name(dtype);
  }
}

TEST_F(CudaMoE, SwiGluMatchesCpu) {
  const std::vector<Tensor> in = {uniform({7, 1001}, -6, 6, 21), uniform({7, 1001}, -2, 2, 22)};
  expect_twin_all(
      "swiglu", [](auto& x) { return swiglu(x[0], x[1]); }, in, /*autocast=*/false);
}

TEST_F(CudaMoE, GradcheckOnTheGpu) {
  const std::vector<int64_t> counts = {2, 0, 3};
  const Fn chain = [&](const std::vector<Tensor>& x) {
    const Tensor h = swiglu(grouped_linear(x[0], x[1], counts), grouped_linear(x[0], x[2], counts));
    return grouped_linear(h, x[3], counts);
  };
  std::vector<Tensor> in = {uniform({5, 4}, -1, 1, 31), uniform({3, 6, 4}, -1, 1, 32),
                            uniform({3, 6, 4}, -1, 1, 33), uniform({3, 4, 6}, -1, 1, 34)};
  for (Tensor& t : in) t = t.to(kGpu);
  EXPECT_TRUE(testing::gradcheck(chain, in, 1e-6, 1e-6, 1e-4));
}

// dispatch_expert_rows and combine_expert_rows against the CPU, with dropped slots (capacity),
// widths on and off the 4-element vector grid, and combine's mixed path (f32 base and weight, bf16
// expert rows, as under autocast).
TEST_F(CudaMoE, ExpertRowsMatchCpu) {
  Generator gen(8, 0);
  for (int64_t width : {64, 33}) {
    for (int64_t capacity : {0, 40}) {
      const int64_t n = 100, k = 2, e = 4;
      const ExpertDispatch d = sort_by_expert(randint(0, e, {n, k}, gen), e, capacity);
      const int64_t m = d.token.numel();
      const std::string what =
          "width " + std::to_string(width) + ", " + std::to_string(m) + " rows";
      expect_twin_all(
          "dispatch_expert_rows " + what,
          [](auto& x) { return dispatch_expert_rows(x[0], x[1], x[2]); },
          {uniform({n, width}, -1, 1, 61), d.token, d.position}, /*autocast=*/false);
      const std::vector<Tensor> in = {uniform({n, width}, -1, 1, 62),
                                      uniform({m, width}, -1, 1, 63), uniform({m}, 0, 1, 64),
                                      d.token, d.position};
      expect_twin_all(
          "combine_expert_rows " + what,
          [](auto& x) { return combine_expert_rows(x[0], x[1], x[2], x[3], x[4]); }, in,
          /*autocast=*/false);
      expect_twin(
          "combine_expert_rows with bf16 rows " + what,
          [](auto& x) { return combine_expert_rows(x[0], x[1].to(DType::bf16), x[2], x[3], x[4]); },
          in, DType::f32, 1e-2);
    }
  }
}

// The layer's gradients are the same bits on every run: dispatch and combine gather in slot order
// (the index_add they replace added with atomics in whatever order the threads came).
TEST_F(CudaMoE, MoELayerBackwardIsRepeatable) {
  const moe::MoEConfig cfg{
      .d_model = 64, .n_experts = 8, .top_k = 2, .d_ff = 96, .shared_hidden = 64};
  Generator gen(6);
  moe::MoELayer layer(cfg, gen);
  layer.to(kGpu);
  const Tensor h = uniform({8, 64, 64}, -1, 1, 42, DType::f32).to(kGpu);
  const auto gradients = [&] {
    const Tensor x = h.detach().set_requires_grad();
    {
      AutocastGuard guard(DType::bf16);
      sum(layer.forward(x).y).backward();
    }
    std::vector<Tensor> g = {x.grad().clone()};
    for (auto& [name, p] : layer.named_parameters()) {
      g.push_back(p.grad().clone());
      p.zero_grad();
    }
    return g;
  };
  const std::vector<Tensor> first = gradients(), second = gradients();
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_EQ(amax(abs(first[i] - second[i])).item(), 0.0) << "gradient " << i;
}

// The whole layer (router, device sort, grouped experts, shared expert, balance loss) on the GPU
// against the same layer on the CPU: f32 tight, bf16 autocast loose, with and without capacity.
TEST_F(CudaMoE, MoELayerMatchesCpu) {
  for (double capacity : {0.0, 0.75}) {
    for (bool bf16 : {false, true}) {
      SCOPED_TRACE(std::string(bf16 ? "bf16 autocast" : "f32") + ", capacity " +
                   std::to_string(capacity));
      const moe::MoEConfig cfg{.d_model = 32,
                               .n_experts = 8,
                               .top_k = 2,
                               .d_ff = 48,
                               .shared_hidden = 64,
                               .capacity_factor = capacity};
      Generator gen_cpu(5), gen_gpu(5);
      moe::MoELayer cpu(cfg, gen_cpu), gpu(cfg, gen_gpu);
      gpu.to(kGpu);
      const Tensor h = uniform({4, 50, 32}, -1, 1, 41, DType::f32);
      const Tensor hc = h.clone().set_requires_grad(), hg = h.to(kGpu).set_requires_grad();
      const moe::MoELayer::Output oc = cpu.forward(hc);
      moe::MoELayer::Output og;
      {
        AutocastGuard guard(DType::bf16, bf16);
        og = gpu.forward(hg);
      }
      const double tol = bf16 ? 2e-2 : 2e-5;
      // Routing itself runs in f32 in both cases, so the decisions match unless a near-tie
      // flips; the inputs are random, so the counts must agree.
      EXPECT_EQ(og.expert_counts.to_vector<int64_t>(), oc.expert_counts.to_vector<int64_t>());
      EXPECT_EQ(og.dropped.to_vector<int64_t>(), oc.dropped.to_vector<int64_t>());
      EXPECT_LE(rel_error(og.y, oc.y), tol) << "y";
      EXPECT_LE(rel_error(og.aux_loss, oc.aux_loss), 1e-6) << "aux_loss";
      const Tensor w = uniform(h.shape(), 0.5, 1.5, 7, DType::f32);
      (sum(oc.y * w) + oc.aux_loss * 10.0).backward();
      (sum(og.y * w.to(kGpu)) + og.aux_loss * 10.0).backward();
      EXPECT_LE(rel_error(hg.grad(), hc.grad()), 4 * tol) << "input gradient";
      const auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
      for (size_t i = 0; i < pc.size(); ++i)
        EXPECT_LE(rel_error(pg[i].second.grad(), pc[i].second.grad()), 4 * tol) << pc[i].first;
    }
  }
}

}  // namespace
}  // namespace loom
