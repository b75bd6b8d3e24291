// Single-process checks of loom::parallel: the Local backend's semantics and argument errors,
// launch detection from the environment, grid validation and layout, the differentiable
// collectives over a group of one (forward, gradient checks) and the DP reducer's bookkeeping.
#include <cstdlib>
#include <optional>

#include "models/nn/linear.h"
#include "parallel/collectives.h"
#include "parallel/communicator.h"
#include "parallel/dp_reducer.h"
#include "parallel/grid.h"
#include "testing.h"

namespace loom::parallel {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

namespace {

// Runs f, expecting loom::Error whose message contains every fragment.
template <class F>
::testing::AssertionResult throws_with(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments) {
      if (msg.find(frag) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << frag << "': " << msg;
    }
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no loom::Error thrown";
}

// Sets (or unsets, for nullptr) environment variables for one scope, restoring them after.
class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name);
      saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
      if (value) {
        setenv(name, value, 1);
      } else {
        unsetenv(name);
      }
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

const std::initializer_list<std::pair<const char*, const char*>> kNoLauncher = {
    {"OMPI_COMM_WORLD_SIZE", nullptr}, {"PMI_SIZE", nullptr},
    {"SLURM_NTASKS", nullptr},         {"OMPI_COMM_WORLD_LOCAL_RANK", nullptr},
    {"SLURM_LOCALID", nullptr},        {"MPI_LOCALRANKID", nullptr}};

}  // namespace

// -- Local backend --------------------------------------------------------------------------------

TEST(LocalCommunicator, IsAGroupOfOne) {
  LocalCommunicator c("tp");
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_EQ(c.name(), "tp");
  EXPECT_STREQ(c.backend(), "local");
  EXPECT_EQ(c.describe(), "group tp (local, rank 0 of 1, world rank 0)");
  auto sub = c.split(3, 0);
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->name(), "tp.3");
  EXPECT_EQ(c.split(0, 0, "dp")->name(), "dp");
}

TEST(LocalCommunicator, ReductionsLeaveValues) {
  LocalCommunicator c;
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
    Tensor t = from_vector<float>({1.5f, -2, 3}, {3});
    c.all_reduce(t, op);
    EXPECT_TRUE(allclose(t, from_vector<float>({1.5f, -2, 3}, {3}))) << reduce_op_name(op);
  }
  Tensor i = from_vector<int64_t>({4, 5}, {2});
  c.all_reduce(i, ReduceOp::max);
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{4, 5}));
  Tensor t = from_vector<double>({7}, {1});
  Work w = c.all_reduce_async(t, ReduceOp::avg);
  EXPECT_TRUE(w.is_completed());
  w.wait();
  EXPECT_EQ(t.item(), 7.0);
}

TEST(LocalCommunicator, DataMovementCopies) {
  LocalCommunicator c;
  const Tensor in = uniform({2, 3}, -1, 1, 3, DType::f32);
  Tensor out = zeros({2, 3});
  c.all_gather(in, out);
  EXPECT_TRUE(allclose(out, in, 0, 0));
  out = zeros({2, 3});
  c.reduce_scatter(in, out, ReduceOp::sum);
  EXPECT_TRUE(allclose(out, in, 0, 0));
  out = zeros({2, 3});
  const std::vector<int64_t> counts{2};
  c.all_to_all_v(in, out, counts, counts);
  EXPECT_TRUE(allclose(out, in, 0, 0));
  const std::vector<int64_t> none{0};
  c.all_to_all_v(zeros({0, 3}), zeros({0, 3}), none, none);  // zero rows is fine
  Tensor b = in.clone();
  c.broadcast(b, 0);
  EXPECT_TRUE(allclose(b, in, 0, 0));
  Tensor flags = from_vector<uint8_t>({1, 0}, {2}, DType::boolean);
  Tensor flags_out = zeros({2}, DType::boolean);
  c.all_gather(flags, flags_out);  // data movement takes any dtype
  EXPECT_EQ(flags_out.to_vector<uint8_t>(), (std::vector<uint8_t>{1, 0}));
  c.barrier();
}

TEST(LocalCommunicator, ErrorsNameOpGroupAndRank) {
  LocalCommunicator c("tp");
  const char* ctx = "group tp (local, rank 0 of 1, world rank 0)";
  EXPECT_TRUE(throws_with(
      [&] {
        c.all_gather(zeros({2, 3}), zeros({3, 3}));
      },
      {"[all_gather]", ctx, "[3, 3]", "[2, 3]"}));
  EXPECT_TRUE(throws_with(
      [&] {
        c.all_gather(zeros({2, 3}), zeros({2, 3}, DType::f64));
      },
      {"[all_gather]", ctx, "dtype"}));
  EXPECT_TRUE(throws_with(
      [&] {
        c.all_reduce(zeros({3, 2}).t());
      },
      {"[all_reduce]", ctx, "contiguous", "[2, 3]"}));
  EXPECT_TRUE(throws_with([&] { c.all_reduce(Tensor()); }, {"[all_reduce]", ctx, "undefined"}));
  EXPECT_TRUE(throws_with([&] { c.all_reduce(zeros({2}, DType::boolean)); },
                          {"[all_reduce]", ctx, "bool"}));
  EXPECT_TRUE(throws_with([&] { c.all_reduce(zeros({2}, DType::i32), ReduceOp::avg); },
                          {"[all_reduce]", ctx, "avg", "i32"}));
  EXPECT_TRUE(throws_with(
      [&] {
        c.reduce_scatter(zeros({2, 3}), zeros({1, 3}));
      },
      {"[reduce_scatter]", ctx, "[1, 3]", "group size * out rows"}));
  const std::vector<int64_t> two{1, 1}, one{2}, neg{-1};
  EXPECT_TRUE(throws_with([&] { c.all_to_all_v(zeros({2}), zeros({2}), two, two); },
                          {"[all_to_all_v]", ctx, "1 entries"}));
  EXPECT_TRUE(throws_with([&] { c.all_to_all_v(zeros({2}), zeros({2}), neg, one); },
                          {"[all_to_all_v]", ctx, ">= 0"}));
  EXPECT_TRUE(throws_with([&] { c.all_to_all_v(zeros({3}), zeros({2}), one, one); },
                          {"[all_to_all_v]", ctx, "[3]", "expected 2 rows"}));
  EXPECT_TRUE(throws_with([&] { c.broadcast(zeros({2}), 1); }, {"[broadcast]", ctx, "root 1"}));
  EXPECT_TRUE(throws_with([&] { c.send(zeros({2}), 0); }, {"[send]", ctx, "another rank"}));
  EXPECT_TRUE(throws_with([&] { c.recv(zeros({2}), 0); }, {"[recv]", ctx, "another rank"}));
  EXPECT_TRUE(throws_with([&] { c.split(-1, 0); }, {"[split]", ctx, "color"}));
}

// -- launch detection -----------------------------------------------------------------------------

TEST(Launch, WorldIsLocalWithoutALauncher) {
  ScopedEnv env(kNoLauncher);
  EXPECT_EQ(launched_world_size(), 1);
  EXPECT_EQ(local_rank(), 0);
  auto world = world_communicator();
  EXPECT_STREQ(world->backend(), "local");
  EXPECT_EQ(world->size(), 1);
  EXPECT_EQ(world->name(), "world");
}

TEST(Launch, ReadsOpenMpiThenPmiThenSlurm) {
  {
    ScopedEnv env(kNoLauncher);
    ScopedEnv set({{"SLURM_NTASKS", "8"}, {"PMI_SIZE", "4"}, {"SLURM_LOCALID", "2"}});
    EXPECT_EQ(launched_world_size(), 4);
    EXPECT_EQ(local_rank(), 2);
  }
  {
    ScopedEnv env(kNoLauncher);
    ScopedEnv set({{"OMPI_COMM_WORLD_SIZE", "1"},
                   {"SLURM_NTASKS", "8"},
                   {"OMPI_COMM_WORLD_LOCAL_RANK", "3"},
                   {"SLURM_LOCALID", "2"}});
    EXPECT_EQ(launched_world_size(), 1);  // Open MPI's own count wins: a single-rank mpirun
    EXPECT_EQ(local_rank(), 3);
    EXPECT_STREQ(world_communicator()->backend(), "local");
  }
  {
    ScopedEnv env(kNoLauncher);
    ScopedEnv set({{"OMPI_COMM_WORLD_SIZE", "two"}});
    EXPECT_TRUE(throws_with([] { launched_world_size(); }, {"OMPI_COMM_WORLD_SIZE", "two"}));
  }
}

// -- grid -----------------------------------------------------------------------------------------

TEST(ParallelGrid, ValidationNamesTheSizes) {
  EXPECT_TRUE(throws_with([] { ParallelGrid::validate({.dp = 2, .tp = 2, .sp = 1}, 8); },
                          {"[ParallelGrid]", "dp 2", "tp 2", "sp 1", "= 4", "world size 8"}));
  EXPECT_TRUE(throws_with([] { ParallelGrid::validate({.dp = 4, .tp = 1, .sp = 1, .ep = 3}, 4); },
                          {"[ParallelGrid]", "ep 3", "dp 4"}));
  EXPECT_TRUE(throws_with([] { ParallelGrid::validate({.dp = 0, .tp = 1, .sp = 1}, 0); },
                          {"[ParallelGrid]", ">= 1", "dp 0"}));
  EXPECT_NO_THROW(ParallelGrid::validate({.dp = 4, .tp = 2, .sp = 1, .ep = 2}, 8));
  auto world = std::make_shared<LocalCommunicator>();
  EXPECT_TRUE(throws_with([&] { ParallelGrid(world, 2, 1, 1); }, {"dp 2", "world size 1"}));
  EXPECT_TRUE(throws_with([&] { ParallelGrid(world, 1, 1, 1, 2); }, {"ep 2", "dp 1"}));
}

TEST(ParallelGrid, LayoutMatchesTheDocumentedTable) {
  // dp = 2, tp = 2, sp = 2: the table in grid.h.
  const GridDims d{.dp = 2, .tp = 2, .sp = 2, .ep = 2};
  const int dp[] = {0, 0, 0, 0, 1, 1, 1, 1}, sp[] = {0, 0, 1, 1, 0, 0, 1, 1},
            tp[] = {0, 1, 0, 1, 0, 1, 0, 1};
  for (int r = 0; r < 8; ++r) {
    const GridCoords c = ParallelGrid::coords_of(r, d);
    EXPECT_EQ(c.dp, dp[r]) << r;
    EXPECT_EQ(c.sp, sp[r]) << r;
    EXPECT_EQ(c.tp, tp[r]) << r;
    EXPECT_EQ(ParallelGrid::rank_of(c, d), r);
  }
}

TEST(ParallelGrid, OneRankGridHasGroupsOfOne) {
  ParallelGrid g(std::make_shared<LocalCommunicator>(), 1, 1, 1);
  for (const auto& c : {g.dp(), g.tp(), g.sp(), g.ep(), g.edp()}) {
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->size(), 1);
  }
  EXPECT_EQ(g.tp()->name(), "tp");
  EXPECT_EQ(g.edp()->name(), "edp");
  EXPECT_EQ(g.coords().dp, 0);
}

// -- collectives over a group of one --------------------------------------------------------------

TEST(Collectives, ForwardIsIdentityForOneRank) {
  Group g = std::make_shared<LocalCommunicator>("tp");
  const Tensor x = uniform({2, 4, 3}, -1, 1, 5);
  EXPECT_TRUE(allclose(copy_to(x, g), x, 0, 0));
  EXPECT_TRUE(allclose(reduce_from(x, g), x, 0, 0));
  for (int64_t dim : {0, 1, 2, -1}) {
    EXPECT_TRUE(allclose(scatter_to(x, g, dim), x, 0, 0)) << dim;
    EXPECT_TRUE(allclose(gather_from(x, g, dim), x, 0, 0)) << dim;
  }
  EXPECT_TRUE(allclose(reduce_scatter_to(x, g), x, 0, 0));
  EXPECT_TRUE(allclose(all_gather_from(x, g), x, 0, 0));
  EXPECT_TRUE(allclose(all_to_all(x, g, {2}, {2}), x, 0, 0));
  // Non-contiguous input is made contiguous before the transfer.
  EXPECT_TRUE(allclose(gather_from(x.transpose(0, 2), g, 1), x.transpose(0, 2), 0, 0));
}

TEST(Collectives, GradientsAreIdentityForOneRank) {
  Group g = std::make_shared<LocalCommunicator>();
  const Tensor x = uniform({4, 2});
  auto check = [&](const char* name, std::function<Tensor(const Tensor&)> f) {
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return f(in[0]) * in[0]; }, {x}))
        << name;
  };
  check("copy_to", [&](const Tensor& t) { return copy_to(t, g); });
  check("reduce_from", [&](const Tensor& t) { return reduce_from(t, g); });
  check("scatter_to", [&](const Tensor& t) { return scatter_to(t, g, 1); });
  check("gather_from", [&](const Tensor& t) { return gather_from(t, g, 0); });
  check("reduce_scatter_to", [&](const Tensor& t) { return reduce_scatter_to(t, g); });
  check("all_gather_from", [&](const Tensor& t) { return all_gather_from(t, g); });
  check("all_to_all", [&](const Tensor& t) { return all_to_all(t, g, {4}, {4}); });
}

TEST(Collectives, ArgumentErrors) {
  Group g = std::make_shared<LocalCommunicator>("sp");
  EXPECT_TRUE(throws_with([&] { copy_to(ones({2}), nullptr); }, {"[copy_to]", "null"}));
  EXPECT_TRUE(throws_with([&] { scatter_to(scalar(1.0), g); }, {"[scatter_to]", "group sp"}));
  EXPECT_TRUE(throws_with([&] { gather_from(ones({2}), g, 3); },
                          {"[gather_from]", "group sp", "dim 3", "[2]"}));
  EXPECT_TRUE(throws_with(
      [&] {
        all_to_all(ones({3, 2}), g, {2}, {2});
      },
      {"[all_to_all_v]", "group sp", "[3, 2]", "send_counts"}));
}

// -- DP reducer over a group of one ---------------------------------------------------------------

namespace {
struct TwoLinear {
  Generator gen{7, 0};
  nn::Linear a{{.in_features = 3, .out_features = 4}, gen};
  nn::Linear b{{.in_features = 4, .out_features = 2}, gen};
  std::vector<std::pair<std::string, Tensor>> params() const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (const auto& [n, t] : a.named_parameters()) out.push_back({"a." + n, t});
    for (const auto& [n, t] : b.named_parameters()) out.push_back({"b." + n, t});
    return out;
  }
  Tensor loss(const Tensor& x) const { return sum(square(b.forward(tanh(a.forward(x))))); }
};
}  // namespace

TEST(DpReducer, BucketsFollowReverseRegistrationOrder) {
  TwoLinear m;
  auto dp = std::make_shared<LocalCommunicator>("dp");
  // b.bias 8 B, b.weight 32 B, a.bias 16 B, a.weight 48 B; buckets of at most 48 bytes.
  DpReducer r(m.params(), dp, 48);
  const std::vector<std::vector<std::string>> want{
      {"b.bias", "b.weight"}, {"a.bias"}, {"a.weight"}};
  EXPECT_EQ(r.bucket_names(), want);
  DpReducer one(m.params(), dp);
  EXPECT_EQ(one.bucket_names().size(), 1u);
  EXPECT_TRUE(throws_with([&] { DpReducer(m.params(), dp, 0); }, {"[DpReducer]", "bucket_bytes"}));
  auto twice = m.params();
  twice.push_back(twice.front());
  EXPECT_TRUE(throws_with([&] { DpReducer(twice, dp); }, {"[DpReducer]", "a.weight", "twice"}));
}

TEST(DpReducer, KeepsGradientsOfOneRankAndViewsThemInBuckets) {
  TwoLinear m, ref;
  const Tensor x = uniform({5, 3}, -1, 1, 11, DType::f32);
  ref.loss(x).backward();
  DpReducer r(m.params(), std::make_shared<LocalCommunicator>("dp"), 40);
  m.loss(x).backward();
  r.finish();
  const auto got = m.params(), want = ref.params();
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(allclose(got[i].second.grad(), want[i].second.grad(), 0, 0)) << got[i].first;
  // b.bias and b.weight share one bucket: their gradients are adjacent views of one buffer.
  const Tensor gb = m.b.bias().grad(), gw = m.b.weight().grad();
  EXPECT_EQ(gb.storage(), gw.storage());
  EXPECT_EQ(gw.offset(), gb.offset() + gb.numel());

  // A second pass accumulates in place into the same buffer; dropping a gradient reattaches it.
  m.a.weight().zero_grad();
  ref.a.weight().zero_grad();
  m.loss(x).backward();
  ref.loss(x).backward();
  r.finish();
  EXPECT_EQ(m.b.bias().grad().storage(), gb.storage());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(allclose(got[i].second.grad(), want[i].second.grad(), 1e-6, 1e-6)) << got[i].first;
}

TEST(DpReducer, SecondBackwardBeforeFinishThrowsUnlessSyncIsOff) {
  TwoLinear m;
  DpReducer r(m.params(), std::make_shared<LocalCommunicator>("dp"));
  const Tensor x = ones({2, 3});
  r.set_sync(false);
  EXPECT_FALSE(r.sync());
  m.loss(x).backward();
  m.loss(x).backward();  // accumulation passes: no reduction, no error
  r.finish();            // no-op while sync is off
  r.set_sync(true);
  m.loss(x).backward();
  EXPECT_TRUE(throws_with([&] { r.set_sync(false); }, {"[DpReducer]", "set_sync(false)"}));
  EXPECT_TRUE(throws_with([&] { m.loss(x).backward(); }, {"[DpReducer]", "finish()"}));
}

TEST(DpReducer, HooksOutliveTheReducerHarmlessly) {
  TwoLinear m;
  { DpReducer r(m.params(), std::make_shared<LocalCommunicator>("dp")); }
  const Tensor x = ones({2, 3});
  m.loss(x).backward();
  EXPECT_NO_THROW(m.loss(x).backward());
}

}  // namespace loom::parallel
