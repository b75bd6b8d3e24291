// Multi-rank checks of loom::parallel, run under mpirun with 2 or 4 ranks (tests/CMakeLists.txt).
// Every collective is checked on each rank against arithmetic on rank-dependent values; the
// conjugate pairs forward and backward per rank (Megatron test_mappings); the grid's groups
// against the documented layout; and the DP reducer against the single-process gradient of the
// full batch. Each rank runs every test; rank 0 prints the usual report, the others print only
// failures, prefixed with their rank. Tests avoid early returns between collectives so that a
// failure on one rank cannot leave the others waiting.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>

#include "models/nn/linear.h"
#include "parallel/collectives.h"
#include "mpi_harness.h"
#include "parallel/communicator.h"
#include "parallel/dp_reducer.h"
#include "parallel/grid.h"
#include "testing.h"

namespace loom::parallel {
using testing::allclose;

namespace {

// The world of the harness (mpi_harness.h), under the name the tests below use.
std::shared_ptr<Communicator>& g_world = loom::testing::mpi_world();

Communicator& world() {
  return *g_world;
}

// x[i] = f(i) for a 1-D or flattened tensor of `shape`.
template <class F>
Tensor make(const Shape& shape, F f, DType dtype = DType::f64) {
  std::vector<double> v(size_t(numel_of(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = f(int64_t(i));
  return from_vector<double>(v, shape).to(dtype);
}

// Uneven all-to-all counts with zeros: rank i sends (i + 2 j) % 3 rows to rank j.
int64_t count(int from, int to) {
  return (from + 2 * to) % 3;
}
// Value of element k of row `row` that rank `from` sends to rank `to`.
double payload(int from, int to, int64_t row, int64_t k) {
  return 1000.0 * from + 100.0 * to + 10.0 * double(row) + double(k);
}

}  // namespace

// -- Communicator ---------------------------------------------------------------------------------

TEST(Mpi, WorldMatchesTheLauncher) {
  EXPECT_STREQ(world().backend(), "mpi");
  EXPECT_EQ(world().size(), launched_world_size());
  EXPECT_EQ(world().world_rank(), world().rank());
  EXPECT_GE(world().size(), 2);
}

TEST(Mpi, AllReduceSumAvgMaxPerDtype) {
  const int r = world().rank(), s = world().size();
  const double sum_r1 = s * (s + 1) / 2.0;  // sum over ranks of (r + 1)
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64}) {
    Tensor t = make(
        {3}, [&](int64_t i) { return double((r + 1) * (i + 1)); }, dt);
    world().all_reduce(t, ReduceOp::sum);
    EXPECT_TRUE(allclose(t, make({3}, [&](int64_t i) { return sum_r1 * double(i + 1); }), 0, 0))
        << dtype_name(dt);
    Tensor m = make(
        {3}, [&](int64_t i) { return double(i == r ? 50 : r - int(i)); }, dt);
    world().all_reduce(m, ReduceOp::max);
    EXPECT_TRUE(
        allclose(m, make({3}, [&](int64_t i) { return i < s ? 50.0 : double(s - 1 - i); }), 0, 0))
        << dtype_name(dt);
  }
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    Tensor t = make(
        {2}, [&](int64_t i) { return double(2 * r + i); }, dt);
    world().all_reduce(t, ReduceOp::avg);
    EXPECT_TRUE(allclose(t, make({2}, [&](int64_t i) { return double(s - 1 + i); }), 0, 0))
        << dtype_name(dt);
  }
}

TEST(Mpi, AllReduceAsyncCompletesOutOfOrderWaits) {
  const int r = world().rank(), s = world().size();
  Tensor a = full({1000}, r + 1.0), b = full({5}, 2.0 * r, DType::f64);
  Work wa = world().all_reduce_async(a, ReduceOp::sum);
  Work wb = world().all_reduce_async(b, ReduceOp::avg);
  wb.wait();
  wa.wait();
  wa.wait();  // idempotent
  EXPECT_TRUE(wa.is_completed());
  EXPECT_TRUE(allclose(a, full({1000}, s * (s + 1) / 2.0), 0, 0));
  EXPECT_TRUE(allclose(b, full({5}, double(s - 1), DType::f64), 0, 0));
  {
    Tensor c = full({3}, 1.0);
    Work wc = world().all_reduce_async(c);  // the destructor waits
  }
}

TEST(Mpi, AllGatherIsRankMajor) {
  const int r = world().rank(), s = world().size();
  const Tensor in = make(
      {2, 3}, [&](int64_t i) { return 100.0 * r + double(i); }, DType::f32);
  Tensor out = zeros({2 * s, 3});
  world().all_gather(in, out);
  EXPECT_TRUE(
      allclose(out, make({2 * s, 3}, [](int64_t i) { return 100.0 * (i / 6) + i % 6; }), 0, 0));
  Tensor ids = full({1}, double(r), DType::i64), all = zeros({s}, DType::i64);
  world().all_gather(ids, all);
  std::vector<int64_t> want(static_cast<size_t>(s));
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(all.to_vector<int64_t>(), want);
}

TEST(Mpi, ReduceScatterGivesThisRanksRowsOfTheSum) {
  const int r = world().rank(), s = world().size();
  // in[row][k] = (r + 1) * (10 row + k): the sum over ranks scales by s (s + 1) / 2.
  const Tensor in =
      make({2 * s, 2}, [&](int64_t i) { return (r + 1.0) * (10.0 * (i / 2) + i % 2); });
  Tensor out = zeros({2, 2}, DType::f64);
  world().reduce_scatter(in, out, ReduceOp::sum);
  const double k = s * (s + 1) / 2.0;
  EXPECT_TRUE(allclose(
      out, make({2, 2}, [&](int64_t i) { return k * (10.0 * (2 * r + i / 2) + i % 2); }), 0, 0));
  Tensor mx = zeros({2, 2}, DType::f64);
  world().reduce_scatter(in, mx, ReduceOp::max);
  EXPECT_TRUE(allclose(
      mx, make({2, 2}, [&](int64_t i) { return double(s) * (10.0 * (2 * r + i / 2) + i % 2); }), 0,
      0));
  Tensor avg = zeros({2, 2}, DType::f64);
  world().reduce_scatter(in, avg, ReduceOp::avg);
  EXPECT_TRUE(allclose(avg, out / double(s), 1e-12, 0));
}

TEST(Mpi, AllToAllVWithUnevenAndZeroCounts) {
  const int r = world().rank(), s = world().size();
  std::vector<int64_t> send(static_cast<size_t>(s)), recv(static_cast<size_t>(s));
  for (int j = 0; j < s; ++j) {
    send[size_t(j)] = count(r, j);
    recv[size_t(j)] = count(j, r);
  }
  const int64_t n_send = std::accumulate(send.begin(), send.end(), int64_t(0));
  const int64_t n_recv = std::accumulate(recv.begin(), recv.end(), int64_t(0));
  std::vector<double> in_v, want_v;
  for (int j = 0; j < s; ++j)
    for (int64_t row = 0; row < send[size_t(j)]; ++row)
      for (int64_t k = 0; k < 2; ++k) in_v.push_back(payload(r, j, row, k));
  for (int j = 0; j < s; ++j)
    for (int64_t row = 0; row < recv[size_t(j)]; ++row)
      for (int64_t k = 0; k < 2; ++k) want_v.push_back(payload(j, r, row, k));
  const Tensor in = from_vector<double>(in_v, {n_send, 2});
  Tensor out = full({n_recv, 2}, -1.0, DType::f64);
  world().all_to_all_v(in, out, send, recv);
  EXPECT_TRUE(allclose(out, from_vector<double>(want_v, {n_recv, 2}), 0, 0));
  // Everything to rank 0 (others receive nothing).
  std::vector<int64_t> to0(static_cast<size_t>(s), 0),
      from_all(static_cast<size_t>(s), r == 0 ? 1 : 0);
  to0[0] = 1;
  Tensor got = zeros({r == 0 ? s : 0}, DType::i32);
  world().all_to_all_v(full({1}, double(r), DType::i32), got, to0, from_all);
  if (r == 0) {
    std::vector<int32_t> want(static_cast<size_t>(s));
    std::iota(want.begin(), want.end(), 0);
    EXPECT_EQ(got.to_vector<int32_t>(), want);
  }
}

TEST(Mpi, BroadcastSendRecvBarrier) {
  const int r = world().rank(), s = world().size();
  Tensor t = full({4}, double(r), DType::f32);
  world().broadcast(t, s - 1);
  EXPECT_TRUE(allclose(t, full({4}, double(s - 1)), 0, 0));
  // Ring: each rank sends its id to the next; even ranks send first so no cycle waits.
  const int next = (r + 1) % s, prev = (r + s - 1) % s;
  Tensor mine = full({2}, double(r), DType::i64), got = zeros({2}, DType::i64);
  if (r % 2 == 0) {
    world().send(mine, next, 7);
    world().recv(got, prev, 7);
  } else {
    world().recv(got, prev, 7);
    world().send(mine, next, 7);
  }
  EXPECT_EQ(got.to_vector<int64_t>(), (std::vector<int64_t>{prev, prev}));
  world().barrier();
}

TEST(Mpi, SplitGroupsByColorOrderedByKey) {
  const int r = world().rank(), s = world().size();
  // Color by parity; key reverses the order inside each group.
  auto half = world().split(r % 2, -r, "parity");
  const int members = (s - r % 2 + 1) / 2;
  EXPECT_EQ(half->size(), members);
  EXPECT_EQ(half->name(), "parity");
  EXPECT_EQ(half->world_rank(), r);
  Tensor id = full({1}, double(r), DType::i32), ids = zeros({members}, DType::i32);
  half->all_gather(id, ids);
  std::vector<int32_t> want;
  for (int q = s - 1; q >= 0; --q)
    if (q % 2 == r % 2) want.push_back(q);
  EXPECT_EQ(ids.to_vector<int32_t>(), want);
  EXPECT_EQ(want[size_t(half->rank())], r);
  Tensor v = full({1}, 1.0);
  half->all_reduce(v);
  EXPECT_EQ(v.item(), double(members));
}

TEST(Mpi, ValidationErrorsNameTheRank) {
  const int r = world().rank(), s = world().size();
  try {
    world().all_gather(zeros({2}), zeros({2}));
    ADD_FAILURE() << "expected loom::Error";
  } catch (const Error& e) {
    const std::string want =
        detail::cat("group world (mpi, rank ", r, " of ", s, ", world rank ", r, ")");
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[all_gather]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(world().send(zeros({1}), r), Error);
  try {
    scatter_to(zeros({2, 2 * s + 1}), g_world, 1);
    ADD_FAILURE() << "expected loom::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by the group size"), std::string::npos)
        << e.what();
  }
}

TEST(Mpi, TransportErrorsCarryTheMpiErrorAndTheGroup) {
  const int r = world().rank();
  // Rank 0 sends 3 elements twice; rank 1 receives them into 2 (truncation, an MPI error) and 4
  // elements (a short message, caught by loom). Other ranks take no part.
  if (r == 0) {
    world().send(full({3}, 1.0), 1, 5);
    world().send(full({3}, 1.0), 1, 6);
  } else if (r == 1) {
    try {
      world().recv(zeros({2}), 0, 5);
      ADD_FAILURE() << "expected loom::Error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("[recv] group world (mpi, rank 1"), std::string::npos) << msg;
      EXPECT_NE(msg.find("MPI_Recv failed: MPI_ERR_TRUNCATE"), std::string::npos) << msg;
      EXPECT_NE(msg.find("mpi_communicator.cpp:"), std::string::npos) << msg;
    }
    try {
      world().recv(zeros({4}), 0, 6);
      ADD_FAILURE() << "expected loom::Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("received 3 elements from rank 0, expected 4"),
                std::string::npos)
          << e.what();
    }
  }
}

// -- grid -----------------------------------------------------------------------------------------

namespace {
// World ranks of comm's members, by group rank.
std::vector<int32_t> members(Communicator& comm) {
  Tensor all = zeros({comm.size()}, DType::i32);
  comm.all_gather(full({1}, double(comm.world_rank()), DType::i32), all);
  return all.to_vector<int32_t>();
}
// The expected members of this rank's group: every world rank q with same(q), in index order.
template <class Same, class Index>
std::vector<int32_t> expected(int world_size, Same same, Index index) {
  std::vector<std::pair<int, int32_t>> v;
  for (int q = 0; q < world_size; ++q)
    if (same(q)) v.push_back({index(q), q});
  std::sort(v.begin(), v.end());
  std::vector<int32_t> out;
  for (auto& p : v) out.push_back(p.second);
  return out;
}
}  // namespace

TEST(MpiGrid, EveryFactorizationGivesTheDocumentedGroups) {
  const int s = world().size(), r = world().rank();
  for (int dp = 1; dp <= s; ++dp)
    for (int tp = 1; tp <= s; ++tp)
      for (int sp = 1; sp <= s; ++sp)
        for (int ep = 1; ep <= dp; ++ep) {
          if (dp * tp * sp != s || dp % ep != 0) continue;
          const GridDims d{dp, tp, sp, ep};
          ParallelGrid g(g_world, d);
          auto c = [&](int q) { return ParallelGrid::coords_of(q, d); };
          const GridCoords me = c(r);
          const std::string what = detail::cat("dp ", dp, " tp ", tp, " sp ", sp, " ep ", ep);
          EXPECT_EQ(g.coords().dp, me.dp) << what;
          EXPECT_EQ(members(*g.tp()),
                    expected(
                        s, [&](int q) { return c(q).dp == me.dp && c(q).sp == me.sp; },
                        [&](int q) { return c(q).tp; }))
              << what;
          EXPECT_EQ(members(*g.sp()),
                    expected(
                        s, [&](int q) { return c(q).dp == me.dp && c(q).tp == me.tp; },
                        [&](int q) { return c(q).sp; }))
              << what;
          auto same_cell = [&](int q) { return c(q).tp == me.tp && c(q).sp == me.sp; };
          EXPECT_EQ(members(*g.dp()), expected(s, same_cell, [&](int q) { return c(q).dp; }))
              << what;
          EXPECT_EQ(members(*g.ep()),
                    expected(
                        s, [&](int q) { return same_cell(q) && c(q).dp / ep == me.dp / ep; },
                        [&](int q) { return c(q).dp % ep; }))
              << what;
          EXPECT_EQ(members(*g.edp()),
                    expected(
                        s, [&](int q) { return same_cell(q) && c(q).dp % ep == me.dp % ep; },
                        [&](int q) { return c(q).dp / ep; }))
              << what;
          EXPECT_EQ(g.tp()->rank(), me.tp) << what;
          EXPECT_EQ(g.dp()->rank(), me.dp) << what;
          EXPECT_EQ(g.ep()->rank(), me.dp % ep) << what;
        }
}

// -- conjugate pairs, forward and backward per rank -----------------------------------------------

namespace {
// Runs y = f(x) with x requiring grad, backward with seed, returns (y, x.grad).
std::pair<Tensor, Tensor> run(const Tensor& x0, const std::function<Tensor(const Tensor&)>& f,
                              const Tensor& seed) {
  Tensor x = x0.clone().set_requires_grad();
  Tensor y = f(x);
  y.backward(seed);
  return {y.detach(), x.grad()};
}
}  // namespace

TEST(MpiCollectives, CopyToAndReduceFrom) {
  const int r = world().rank(), s = world().size();
  const double ranks_sum = s * (s - 1) / 2.0;
  const Tensor x = make({2, 3}, [&](int64_t i) { return double(r * 10 + i); });
  const Tensor seed = make({2, 3}, [&](int64_t i) { return double(r + 1) * (i + 1); });
  // copy_to: y = x, grad = sum over ranks of seed.
  auto [y1, g1] = run(
      x, [](const Tensor& t) { return copy_to(t, g_world); }, seed);
  EXPECT_TRUE(allclose(y1, x, 0, 0));
  EXPECT_TRUE(
      allclose(g1, make({2, 3}, [&](int64_t i) { return s * (s + 1) / 2.0 * (i + 1); }), 0, 0));
  // reduce_from: y = sum over ranks of x, grad = this rank's seed.
  auto [y2, g2] = run(
      x, [](const Tensor& t) { return reduce_from(t, g_world); }, seed);
  EXPECT_TRUE(
      allclose(y2, make({2, 3}, [&](int64_t i) { return 10 * ranks_sum + s * double(i); }), 0, 0));
  EXPECT_TRUE(allclose(g2, seed, 0, 0));
}

TEST(MpiCollectives, ScatterToAndGatherFrom) {
  const int r = world().rank(), s = world().size();
  // scatter_to along dim 1: x [2, 2 s] identical on all ranks; y = columns [2 r, 2 r + 2).
  const Tensor full_x = make({2, 2 * s}, [](int64_t i) { return double(i); });
  const Tensor seed = make({2, 2}, [&](int64_t i) { return 100.0 * r + double(i); });
  auto [y1, g1] = run(
      full_x, [](const Tensor& t) { return scatter_to(t, g_world, 1); }, seed);
  EXPECT_TRUE(allclose(y1, full_x.narrow(1, 2 * r, 2), 0, 0));
  // grad = the seeds of all ranks side by side along dim 1.
  const Tensor all_seeds = make({2, 2 * s}, [&](int64_t i) {
    const int64_t row = i / (2 * s), col = i % (2 * s);
    return 100.0 * double(col / 2) + double(row * 2 + col % 2);
  });
  EXPECT_TRUE(allclose(g1, all_seeds, 0, 0));
  // gather_from along dim 1: x = this rank's columns; y = all columns; grad = own slice of seed.
  const Tensor part = make({2, 2}, [&](int64_t i) { return 100.0 * r + double(i); });
  const Tensor big_seed = make({2, 2 * s}, [&](int64_t i) { return double(r * 1000 + i); });
  auto [y2, g2] = run(
      part, [](const Tensor& t) { return gather_from(t, g_world, 1); }, big_seed);
  EXPECT_TRUE(allclose(y2, all_seeds, 0, 0));
  EXPECT_TRUE(allclose(g2, big_seed.narrow(1, 2 * r, 2), 0, 0));
  // Dim 0 and a 3-D middle dim take the same path through the permute.
  const Tensor x3 = make({2, 2 * s, 3}, [](int64_t i) { return double(i); });
  const Tensor mine = scatter_to(x3, g_world, 1);
  EXPECT_TRUE(allclose(gather_from(mine, g_world, 1), x3, 0, 0));
  EXPECT_TRUE(allclose(gather_from(scatter_to(x3.transpose(0, 1), g_world, 0), g_world, 0),
                       x3.transpose(0, 1), 0, 0));
}

TEST(MpiCollectives, ReduceScatterToAndAllGatherFrom) {
  const int r = world().rank(), s = world().size();
  // reduce_scatter_to: x [2 s, 2] = (r + 1) * base; y = rows [2 r, 2 r + 2) of the sum.
  const Tensor base = make({2 * s, 2}, [](int64_t i) { return double(i); });
  const double k = s * (s + 1) / 2.0;
  const Tensor seed = make({2, 2}, [&](int64_t i) { return double(r * 10 + i); });
  auto [y1, g1] = run(
      base * double(r + 1), [](const Tensor& t) { return reduce_scatter_to(t, g_world); }, seed);
  EXPECT_TRUE(allclose(y1, base.narrow(0, 2 * r, 2) * k, 0, 0));
  // grad = every rank's seed stacked rank-major.
  const Tensor stacked = make({2 * s, 2}, [](int64_t i) { return double((i / 4) * 10 + i % 4); });
  EXPECT_TRUE(allclose(g1, stacked, 0, 0));
  // all_gather_from: x = this rank's rows; y = stacked; grad = own rows of the sum of the seeds.
  const Tensor big_seed = make({2 * s, 2}, [&](int64_t i) { return (r + 1.0) * double(i); });
  auto [y2, g2] = run(
      make({2, 2}, [&](int64_t i) { return double(r * 10 + i); }),
      [](const Tensor& t) { return all_gather_from(t, g_world); }, big_seed);
  EXPECT_TRUE(allclose(y2, stacked, 0, 0));
  EXPECT_TRUE(allclose(g2, base.narrow(0, 2 * r, 2) * k, 0, 0));
}

TEST(MpiCollectives, AllToAllBackwardSendsGradientsHome) {
  const int r = world().rank(), s = world().size();
  std::vector<int64_t> send(static_cast<size_t>(s)), recv(static_cast<size_t>(s));
  for (int j = 0; j < s; ++j) {
    send[size_t(j)] = count(r, j);
    recv[size_t(j)] = count(j, r);
  }
  std::vector<double> x_v, y_v, seed_v, grad_v;
  for (int j = 0; j < s; ++j)
    for (int64_t row = 0; row < send[size_t(j)]; ++row) {
      x_v.push_back(payload(r, j, row, 0));
      grad_v.push_back(-payload(r, j, row, 0));  // what rank j will send back
    }
  for (int j = 0; j < s; ++j)
    for (int64_t row = 0; row < recv[size_t(j)]; ++row) {
      y_v.push_back(payload(j, r, row, 0));
      seed_v.push_back(-payload(j, r, row, 0));
    }
  const auto n = [](const std::vector<double>& v) { return int64_t(v.size()); };
  auto [y, g] = run(
      from_vector<double>(x_v, {n(x_v), 1}),
      [&](const Tensor& t) { return all_to_all(t, g_world, send, recv); },
      from_vector<double>(seed_v, {n(seed_v), 1}));
  EXPECT_TRUE(allclose(y, from_vector<double>(y_v, {n(y_v), 1}), 0, 0));
  EXPECT_TRUE(allclose(g, from_vector<double>(grad_v, {n(grad_v), 1}), 0, 0));
}

TEST(MpiCollectives, TensorParallelMlpMatchesTheUnshardedOne) {
  // Column-parallel then row-parallel linear (Megatron MLP): copy_to, local matmuls on weight
  // shards, reduce_from. Forward and every gradient must match the one-rank computation.
  const int r = world().rank(), s = world().size();
  const int64_t h = 2 * s;
  const Tensor x0 = testing::uniform({3, 4}, -1, 1, 1), w1 = testing::uniform({4, h}, -1, 1, 2),
               w2 = testing::uniform({h, 5}, -1, 1, 3);
  Tensor x = x0.clone().set_requires_grad();
  Tensor a = w1.narrow(1, 2 * r, 2).contiguous().set_requires_grad();
  Tensor b = w2.narrow(0, 2 * r, 2).contiguous().set_requires_grad();
  Tensor y = reduce_from(matmul(tanh(matmul(copy_to(x, g_world), a)), b), g_world);
  sum(square(y)).backward();
  Tensor xr = x0.clone().set_requires_grad(), ar = w1.clone().set_requires_grad(),
         br = w2.clone().set_requires_grad();
  Tensor yr = matmul(tanh(matmul(xr, ar)), br);
  sum(square(yr)).backward();
  EXPECT_TRUE(allclose(y, yr, 1e-12, 1e-10));
  EXPECT_TRUE(allclose(x.grad(), xr.grad(), 1e-12, 1e-10));
  EXPECT_TRUE(allclose(a.grad(), ar.grad().narrow(1, 2 * r, 2), 1e-12, 1e-10));
  EXPECT_TRUE(allclose(b.grad(), br.grad().narrow(0, 2 * r, 2), 1e-12, 1e-10));
}

// -- DP reducer -----------------------------------------------------------------------------------

namespace {
struct Mlp {
  Generator gen{3, 0};
  std::shared_ptr<nn::Linear> a =
      std::make_shared<nn::Linear>(nn::LinearConfig{.in_features = 4, .out_features = 8}, gen);
  std::shared_ptr<nn::Linear> b =
      std::make_shared<nn::Linear>(nn::LinearConfig{.in_features = 8, .out_features = 3}, gen);
  Tensor extra = full({2}, 0.5, DType::f64).set_requires_grad();  // used only on some ranks
  Mlp() {
    a->to(DType::f64);
    b->to(DType::f64);
  }
  std::vector<std::pair<std::string, Tensor>> params() const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (const auto& [n, t] : a->named_parameters()) out.push_back({"a." + n, t});
    for (const auto& [n, t] : b->named_parameters()) out.push_back({"b." + n, t});
    out.push_back({"extra", extra});
    return out;
  }
  // Mean over the batch of the squared output; rows of x are samples.
  Tensor loss(const Tensor& x) const {
    return sum(square(b->forward(tanh(a->forward(x))))) / double(x.size(0));
  }
};

const int64_t kBatch = 8;  // divisible by 2 and 4
Tensor full_batch() {
  return testing::uniform({kBatch, 4}, -2, 2, 21);
}
Tensor shard(const Tensor& x, int r, int s) {
  return x.narrow(0, r * (kBatch / s), kBatch / s).contiguous();
}

void expect_grads_equal(const Mlp& got, const Mlp& want, const std::string& what) {
  const auto g = got.params(), w = want.params();
  for (size_t i = 0; i + 1 < g.size(); ++i) {  // all but "extra"
    ASSERT_TRUE(g[i].second.grad().defined()) << what << " " << g[i].first;
    EXPECT_TRUE(allclose(g[i].second.grad(), w[i].second.grad(), 1e-12, 1e-10))
        << what << " " << g[i].first;
  }
}
}  // namespace

TEST(MpiDpReducer, AveragedShardGradientsEqualTheFullBatchGradient) {
  const int r = world().rank(), s = world().size();
  const Tensor x = full_batch();
  Mlp reference;
  reference.loss(x).backward();
  for (int64_t bucket_bytes : {int64_t(1), int64_t(200), int64_t(1) << 20}) {
    Mlp m;
    DpReducer reducer(m.params(), g_world, bucket_bytes);
    const std::string what = detail::cat("bucket_bytes ", bucket_bytes);
    for (int step = 0; step < 2; ++step) {  // the second pass reuses the attached buffers
      m.a->zero_grad();
      m.b->zero_grad();
      m.loss(shard(x, r, s)).backward();
      reducer.finish();
      expect_grads_equal(m, reference, what);
    }
  }
}

TEST(MpiDpReducer, MicroBatchAccumulationSkipsNonFinalReductions) {
  const int r = world().rank(), s = world().size();
  const Tensor x = full_batch(), mine = shard(x, r, s);
  const int64_t half = mine.size(0) / 2;
  Mlp reference, local, m;
  reference.loss(x).backward();
  local.loss(mine.narrow(0, 0, half)).backward();
  DpReducer reducer(m.params(), g_world, 64);
  reducer.set_sync(false);
  (m.loss(mine.narrow(0, 0, half)) * 0.5).backward();
  reducer.finish();  // no-op: the gradient stays this rank's own
  EXPECT_TRUE(allclose(m.a->weight().grad(), local.a->weight().grad() * 0.5, 1e-12, 1e-10));
  reducer.set_sync(true);
  (m.loss(mine.narrow(0, half, half)) * 0.5).backward();
  reducer.finish();
  expect_grads_equal(m, reference, "two micro-batches");
}

TEST(MpiDpReducer, ParameterUnusedOnSomeRanksGetsTheAverage) {
  const int r = world().rank(), s = world().size();
  Mlp m;
  DpReducer reducer(m.params(), g_world, 48);
  Tensor loss = m.loss(shard(full_batch(), r, s));
  if (r == 0) loss = loss + sum(m.extra * 3.0);  // d/d extra = 3 on rank 0, nothing elsewhere
  loss.backward();
  reducer.finish();
  ASSERT_TRUE(m.extra.grad().defined());
  EXPECT_TRUE(allclose(m.extra.grad(), full({2}, 3.0 / s, DType::f64), 1e-15, 0));
}

}  // namespace loom::parallel

int main(int argc, char** argv) {
  return loom::testing::run_mpi_tests(argc, argv);
}
