// DiT / DiT-MoE model tests: the §10 oracles (zero output and identity blocks at init, gradient
// only into the output Linear on the first backward, parameter counts, embedding layouts, CFG and
// label dropout), the unpatchify layout, gradient reach and misuse errors.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "models/dit/dit.h"
#include "testing.h"

namespace loom {
using testing::allclose;
using testing::uniform;

namespace {

using dit::DiT;
using dit::DiTConfig;

DiTConfig small_dense(int64_t channels = 4) {
  return DiTConfig{.input_size = 8,
                   .patch_size = 2,
                   .in_channels = channels,
                   .hidden_size = 32,
                   .depth = 2,
                   .num_heads = 4,
                   .num_classes = 10};
}

DiTConfig small_moe() {
  DiTConfig c = small_dense();
  c.num_experts = 4;
  c.top_k = 2;
  c.num_shared_experts = 2;
  return c;
}

struct Inputs {
  Tensor x, t, y;
};

Inputs make_inputs(const DiTConfig& c, int64_t B, DType dtype, uint64_t seed = 3) {
  Generator gen(seed, 5);
  return {randn({B, c.in_channels, c.input_size, c.input_size}, gen, dtype),
          from_vector<double>({0, 17, 999, 500.5, 3, 250}, {6}, dtype).narrow(0, 0, B).contiguous(),
          randint(0, c.num_classes, {B}, gen)};
}

// Overwrites every parameter with N(0, std^2) values, so the zero-initialized layers act too.
void randomize(nn::Module& m, uint64_t seed, double std = 0.2) {
  Generator gen(seed, 9);
  for (const auto& [name, p] : m.named_parameters()) copy_into(p, randn(p.shape(), gen) * std);
}

bool all_zero(const Tensor& t) {
  for (double v : t.to_vector<double>())
    if (v != 0.0) return false;
  return true;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// The block inputs the model would build: tokens [B, T, D] and SiLU(c) [B, D].
std::pair<Tensor, Tensor> block_inputs(const DiT& m, const Inputs& in) {
  const Tensor tokens = m.x_embedder().forward(in.x) + m.pos_embed();
  const Tensor silu_c = silu(m.t_embedder().forward(in.t) + m.y_embedder().forward(in.y));
  return {tokens, silu_c};
}

}  // namespace

// -- oracle 1: adaLN-Zero init
// ---------------------------------------------------------------------

TEST(DiT, FreshModelOutputsExactlyZeroAndBlocksAreIdentity) {
  for (const DiTConfig& cfg : {small_dense(), small_moe()}) {
    Generator gen(1);
    DiT m(cfg, gen);
    const Inputs in = make_inputs(cfg, 3, DType::f32);
    const DiT::Output o = m.forward(in.x, in.t, in.y);
    EXPECT_EQ(o.out.shape(), (Shape{3, 8, 8, 8}));
    EXPECT_TRUE(all_zero(o.out));

    auto [h, silu_c] = block_inputs(m, in);
    ASSERT_FALSE(all_zero(h));
    for (const auto& block : m.blocks()) {
      const Tensor next = block->forward(h, silu_c).x;
      EXPECT_EQ(next.to_vector<float>(), h.to_vector<float>());
      h = next;
    }
  }
}

TEST(DiT, FirstBackwardReachesOnlyTheOutputLinear) {
  for (const DiTConfig& cfg : {small_dense(), small_moe()}) {
    Generator gen(2);
    DiT m(cfg, gen);
    const Inputs in = make_inputs(cfg, 2, DType::f32);
    const Tensor out = m.forward(in.x, in.t, in.y).out;
    sum(out * uniform(out.shape(), 0.5, 1.5, 7, DType::f32)).backward();
    for (const auto& [name, p] : m.named_parameters()) {
      const bool output_linear =
          name == "final_layer.linear.weight" || name == "final_layer.linear.bias";
      if (output_linear) {
        ASSERT_TRUE(p.grad().defined()) << name;
        EXPECT_FALSE(all_zero(p.grad())) << name;
      } else {
        EXPECT_TRUE(!p.grad().defined() || all_zero(p.grad())) << name;
      }
    }
  }
}

// -- oracle 2: parameter counts
// ----------------------------------------------------------------------

TEST(DiT, ParameterCountsMatchTheReference) {
  EXPECT_EQ(dit::count_parameters(dit::dit_config("DiT-S/2")), 32865056);
  EXPECT_EQ(dit::count_parameters(dit::dit_config("DiT-B/2")), 130315808);
  EXPECT_EQ(dit::count_parameters(dit::dit_config("DiT-L/2")), 457840672);
  EXPECT_EQ(dit::count_parameters(dit::dit_config("DiT-XL/2")), 674834720);
  EXPECT_EQ(dit::count_parameters(dit::dit_config("DiT-XL/2"), true), 675129632);
  EXPECT_EQ(dit::count_activated_parameters(dit::dit_config("DiT-XL/2")), 674834720);
  // Patch size only changes the patch conv, the output Linear and the (frozen) position table.
  const int64_t xl4 =
      674834720 - (1152 * 4 * 4 + 1152 * 8 * 4 + 8 * 4) + (1152 * 4 * 16 + 1152 * 8 * 16 + 8 * 16);
  EXPECT_EQ(dit::count_parameters(dit::dit_config("DiT-XL/4")), xl4);

  EXPECT_EQ(dit::count_parameters(dit::dit_config("DiT-MoE-S/2-8E2A")), 199209248);
  EXPECT_EQ(dit::count_activated_parameters(dit::dit_config("DiT-MoE-S/2-8E2A")), 71807264);
  // §2.4 table, given rounded.
  const struct {
    const char* name;
    double total, activated, unit;
  } rounded[] = {{"DiT-MoE-S/2-16E2A", 369.1, 71.8, 1e6},
                 {"DiT-MoE-B/2-8E2A", 795.7, 286.1, 1e6},
                 {"DiT-MoE-XL/2-8E2A", 4.168, 1.492, 1e9},
                 {"DiT-MoE-G/2-16E2A", 16.503, 3.181, 1e9}};
  for (const auto& r : rounded) {
    const DiTConfig c = dit::dit_config(r.name);
    const double step = r.unit == 1e6 ? 0.05 : 0.0005;
    EXPECT_NEAR(double(dit::count_parameters(c)) / r.unit, r.total, step) << r.name;
    EXPECT_NEAR(double(dit::count_activated_parameters(c)) / r.unit, r.activated, step) << r.name;
  }
  const DiTConfig g = dit::dit_config("DiT-G/2");
  EXPECT_EQ(g.depth, 40);
  EXPECT_EQ(g.hidden_size, 1408);
  EXPECT_EQ(g.num_experts, 0);
}

TEST(DiT, CountFromConfigEqualsInstantiatedModel) {
  DiTConfig no_sigma = small_dense(1);
  no_sigma.learn_sigma = false;
  no_sigma.class_dropout_prob = 0;  // no null-class row
  no_sigma.mlp_ratio = 2.5;
  DiTConfig moe_no_shared = small_moe();
  moe_no_shared.num_shared_experts = 0;
  moe_no_shared.top_k = 1;
  for (const DiTConfig& cfg : {small_dense(), small_moe(), no_sigma, moe_no_shared}) {
    Generator gen(1);
    DiT m(cfg, gen);
    EXPECT_EQ(dit::count_parameters(cfg), m.num_parameters());
    EXPECT_EQ(dit::count_parameters(cfg, true) - dit::count_parameters(cfg), m.pos_embed().numel());
  }
  // Activated: the unused routed experts of each layer drop out (3 * D * 4D each).
  const DiTConfig moe = small_moe();
  EXPECT_EQ(dit::count_parameters(moe) - dit::count_activated_parameters(moe),
            2 * (4 - 2) * 3 * 32 * 128);
}

TEST(DiT, ParameterNamesFollowTheReference) {
  Generator gen(1);
  DiT m(small_moe(), gen);
  std::vector<std::string> names;
  for (const auto& [name, p] : m.named_parameters()) names.push_back(name);
  for (const char* expected :
       {"x_embedder.proj.weight", "x_embedder.proj.bias", "t_embedder.mlp.0.weight",
        "t_embedder.mlp.2.bias", "y_embedder.embedding_table.weight", "blocks.1.attn.qkv.weight",
        "blocks.1.attn.proj.bias", "blocks.1.moe.router.weight", "blocks.1.moe.experts.w_gate",
        "blocks.0.moe.shared.down_proj.weight", "blocks.1.adaLN_modulation.1.weight",
        "final_layer.adaLN_modulation.1.bias", "final_layer.linear.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  EXPECT_EQ(m.named_buffers().size(), 1u);
  EXPECT_EQ(m.named_buffers()[0].first, "pos_embed");
  EXPECT_EQ(m.y_embedder().table().weight().shape(), (Shape{11, 32}));

  Generator gen2(1);
  DiT dense(small_dense(), gen2);
  EXPECT_EQ(dense.state_dict().at("blocks.0.mlp.fc1.weight").shape(), (Shape{128, 32}));
}

TEST(DiT, InitialisationFollowsTheReference) {
  Generator gen(4);
  DiTConfig cfg = small_dense();
  cfg.hidden_size = 64;
  DiT m(cfg, gen);
  auto stddev = [](const Tensor& t) {
    const auto v = t.to_vector<double>();
    double s = 0;
    for (double x : v) s += x * x;
    return std::sqrt(s / double(v.size()));
  };
  EXPECT_NEAR(stddev(m.t_embedder().fc1().weight()), 0.02, 0.002);
  EXPECT_NEAR(stddev(m.t_embedder().fc2().weight()), 0.02, 0.002);
  EXPECT_NEAR(stddev(m.y_embedder().table().weight()), 0.02, 0.003);
  // Xavier-uniform: std = sqrt(2 / (fan_in + fan_out)); patch conv fans of its [D, C p p] view.
  EXPECT_NEAR(stddev(m.x_embedder().proj().weight()), std::sqrt(2.0 / (64 + 16)), 0.01);
  EXPECT_NEAR(stddev(m.blocks()[0]->attn().qkv().weight()), std::sqrt(2.0 / (64 + 192)), 0.005);
  EXPECT_TRUE(all_zero(m.x_embedder().proj().bias()));
  EXPECT_TRUE(all_zero(m.t_embedder().fc1().bias()));
  for (const auto& b : m.blocks()) {
    EXPECT_TRUE(all_zero(b->adaLN_modulation().weight()));
    EXPECT_TRUE(all_zero(b->adaLN_modulation().bias()));
    EXPECT_FALSE(all_zero(b->mlp().fc1().weight()));
  }
  EXPECT_TRUE(all_zero(m.final_layer().adaLN_modulation().weight()));
  EXPECT_TRUE(all_zero(m.final_layer().linear().weight()));
  // Same seed, same model.
  Generator again(4);
  DiT m2(cfg, again);
  for (const auto& [name, p] : m.state_dict())
    EXPECT_EQ(p.to_vector<double>(), m2.state_dict().at(name).to_vector<double>()) << name;
}

// -- oracle 3: embeddings
// ----------------------------------------------------------------------------

TEST(DiT, TimestepFrequencyEmbedding) {
  const Tensor e = dit::timestep_frequency_embedding(from_vector<float>({0.f, 3.f}, {2}));
  ASSERT_EQ(e.shape(), (Shape{2, 256}));
  std::vector<float> expected(256, 0.f);
  for (int k = 0; k < 128; ++k) expected[size_t(k)] = 1.f;
  EXPECT_EQ(e.select(0, 0).to_vector<float>(), expected);
  const auto row = e.select(0, 1).to_vector<double>();
  for (int k : {0, 1, 5, 127}) {
    const double f = std::exp(-std::log(10000.0) * k / 128.0);
    EXPECT_NEAR(row[size_t(k)], std::cos(3 * f), 1e-6) << k;
    EXPECT_NEAR(row[size_t(128 + k)], std::sin(3 * f), 1e-6) << k;
  }
  const Tensor small = dit::timestep_frequency_embedding(from_vector<double>({0.25}, {1}), 8);
  EXPECT_EQ(small.dtype(), DType::f64);
  EXPECT_DOUBLE_EQ(small.to_vector<double>()[6], std::sin(0.25 * std::pow(10000.0, -0.5)));
  EXPECT_THROW(dit::timestep_frequency_embedding(from_vector<double>({0.25}, {1}), 7), Error);
  EXPECT_THROW(dit::timestep_frequency_embedding(zeros({2, 1}), 8), Error);
}

TEST(DiT, SinCosPositionEmbeddingPutsTheColumnFirst) {
  const int64_t D = 16, G = 3, q = D / 4;
  const Tensor pe = dit::sincos_pos_embed_2d(D, G, DType::f64);
  ASSERT_EQ(pe.shape(), (Shape{G * G, D}));
  const auto v = pe.to_vector<double>();
  auto at = [&](int64_t h, int64_t w, int64_t j) { return v[size_t((h * G + w) * D + j)]; };
  for (int64_t j = 0; j < q; ++j) {
    const double omega = 1.0 / std::pow(10000.0, double(j) / double(q));
    EXPECT_DOUBLE_EQ(at(0, 1, j), std::sin(omega));  // token (h=0, w=1)
    EXPECT_DOUBLE_EQ(at(0, 1, q + j), std::cos(omega));
    EXPECT_DOUBLE_EQ(at(0, 1, 2 * q + j), 0.0);
    EXPECT_DOUBLE_EQ(at(0, 1, 3 * q + j), 1.0);
    EXPECT_DOUBLE_EQ(at(2, 1, 2 * q + j), std::sin(2 * omega));
    EXPECT_DOUBLE_EQ(at(2, 1, 3 * q + j), std::cos(2 * omega));
  }
  EXPECT_THROW(dit::sincos_pos_embed_2d(18, 3), Error);

  Generator gen(1);
  DiT m(small_dense(), gen);
  EXPECT_EQ(m.pos_embed().shape(), (Shape{1, 16, 32}));
  EXPECT_FALSE(m.pos_embed().requires_grad());
  EXPECT_TRUE(allclose(m.pos_embed().reshape({16, 32}), dit::sincos_pos_embed_2d(32, 4), 0, 0));
}

// -- unpatchify
// --------------------------------------------------------------------------------------

TEST(DiT, UnpatchifyLayout) {
  const int64_t B = 2, G = 3, p = 2, C = 3;
  const Tensor tokens = uniform({B, G * G, p * p * C}, -1, 1, 11);
  const Tensor img = dit::unpatchify(tokens, p, C);
  ASSERT_EQ(img.shape(), (Shape{B, C, G * p, G * p}));
  const auto tv = tokens.to_vector<double>(), iv = img.to_vector<double>();
  const int64_t I = G * p;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < I; ++r)
        for (int64_t s = 0; s < I; ++s) {
          const int64_t token = (r / p) * G + s / p, within = ((r % p) * p + s % p) * C + c;
          ASSERT_EQ(iv[size_t(((b * C + c) * I + r) * I + s)],
                    tv[size_t((b * G * G + token) * p * p * C + within)]);
        }
  EXPECT_THROW(dit::unpatchify(zeros({1, 8, 12}), 2, 3), Error);  // T not square
  EXPECT_THROW(dit::unpatchify(zeros({1, 9, 10}), 2, 3), Error);  // last dim != p p C
}

// -- forward behaviour
// -------------------------------------------------------------------------------

TEST(DiT, MoEReportsAuxLossOnlyInTrainingAndCountsPerLayer) {
  const DiTConfig cfg = small_moe();
  Generator gen(1);
  DiT m(cfg, gen);
  const Inputs in = make_inputs(cfg, 4, DType::f32);
  DiT::Output o = m.forward(in.x, in.t, in.y);
  ASSERT_TRUE(o.aux_loss.defined());
  EXPECT_EQ(o.aux_loss.numel(), 1);
  EXPECT_GT(o.aux_loss.item(), 0.0);
  ASSERT_EQ(o.expert_counts.size(), 2u);
  for (const Tensor& counts : o.expert_counts) {
    EXPECT_EQ(counts.dtype(), DType::i64);
    const auto v = counts.to_vector<int64_t>();
    EXPECT_EQ(std::accumulate(v.begin(), v.end(), int64_t(0)), 4 * 16 * 2);  // B T k
  }
  // Zero routers: uniform probabilities give exactly alpha per layer.
  for (const auto& b : m.blocks()) copy_into(b->moe().router().weight(), zeros({4, 32}));
  EXPECT_NEAR(m.forward(in.x, in.t, in.y).aux_loss.item(), 2 * 0.01, 1e-7);

  m.eval();
  o = m.forward(in.x, in.t, in.y);
  EXPECT_FALSE(o.aux_loss.defined());
  EXPECT_EQ(o.expert_counts.size(), 2u);

  Generator gen2(1);
  DiT dense(small_dense(), gen2);
  o = dense.forward(in.x, in.t, in.y);
  EXPECT_FALSE(o.aux_loss.defined());
  EXPECT_TRUE(o.expert_counts.empty());
}

TEST(DiT, DenseBlockMatchesTheWrittenOutFormula) {
  DiTConfig cfg = small_dense();
  cfg.depth = 1;
  Generator gen(3);
  DiT m(cfg, gen);
  m.to(DType::f64);
  randomize(m, 21);
  const Inputs in = make_inputs(cfg, 2, DType::f64);
  const auto [x, silu_c] = block_inputs(m, in);
  const dit::DiTBlock& b = *m.blocks()[0];
  // Recomputed independently: explicit [B, 6D] slices, normalization from mean/var.
  const Tensor mod = linear(silu_c, b.adaLN_modulation().weight(), b.adaLN_modulation().bias());
  auto piece = [&](int i) { return mod.narrow(1, i * 32, 32).unsqueeze(1); };
  auto norm = [](const Tensor& z) {
    const Tensor mu = mean(z, {-1}, true);
    return (z - mu) / sqrt(var(z, {-1}, true, 0) + 1e-6);
  };
  const Tensor h = x + piece(2) * b.attn().forward(norm(x) * (piece(1) + 1.0) + piece(0));
  const Tensor expected = h + piece(5) * b.mlp().forward(norm(h) * (piece(4) + 1.0) + piece(3));
  EXPECT_TRUE(allclose(b.forward(x, silu_c).x, expected, 1e-12, 1e-10));
}

// -- oracle 5: classifier-free guidance and label dropout -----------------------------------------

TEST(DiT, GuidanceScaleOneGivesTheConditionalOutput) {
  for (const DiTConfig& cfg : {small_dense(), small_moe()}) {
    Generator gen(5);
    DiT m(cfg, gen);
    m.to(DType::f64);
    randomize(m, 22);
    m.eval();
    const Inputs in = make_inputs(cfg, 3, DType::f64);
    const Tensor cond = m.forward(in.x, in.t, in.y).out;
    const Tensor uncond = m.forward(in.x, in.t, full_like(in.y, 10)).out;
    ASSERT_FALSE(allclose(cond, uncond, 1e-6, 0));
    EXPECT_TRUE(allclose(m.forward_with_cfg(in.x, in.t, in.y, 1.0), cond, 1e-12, 1e-10));
    // s = 0: unconditional eps, conditional variance channels; s = 3: the formula on all C.
    const Tensor s0 = m.forward_with_cfg(in.x, in.t, in.y, 0.0);
    EXPECT_TRUE(allclose(s0.narrow(1, 0, 4), uncond.narrow(1, 0, 4), 1e-12, 1e-10));
    EXPECT_TRUE(allclose(s0.narrow(1, 4, 4), cond.narrow(1, 4, 4), 1e-12, 1e-10));
    const Tensor s3 = m.forward_with_cfg(in.x, in.t, in.y, 3.0);
    const Tensor eps_c = cond.narrow(1, 0, 4), eps_u = uncond.narrow(1, 0, 4);
    EXPECT_TRUE(allclose(s3.narrow(1, 0, 4), eps_u + (eps_c - eps_u) * 3.0, 1e-12, 1e-10));
    EXPECT_EQ(s3.shape(), cond.shape());
  }
  DiTConfig no_sigma = small_dense();
  no_sigma.learn_sigma = false;
  Generator gen(5);
  DiT m(no_sigma, gen);
  const Inputs in = make_inputs(no_sigma, 2, DType::f32);
  EXPECT_EQ(m.forward_with_cfg(in.x, in.t, in.y, 4.0).shape(), (Shape{2, 4, 8, 8}));
}

TEST(DiT, LabelDropoutWithProbabilityOneUsesTheNullClass) {
  DiTConfig cfg = small_dense();
  cfg.class_dropout_prob = 1.0;
  Generator gen(6);
  DiT m(cfg, gen);
  m.to(DType::f64);
  randomize(m, 23);
  const Inputs in = make_inputs(cfg, 4, DType::f64);
  Generator drop(7, 1);
  EXPECT_EQ(m.y_embedder().drop_labels(in.y, drop).to_vector<int64_t>(),
            std::vector<int64_t>(4, 10));
  const Tensor null_out = m.forward(in.x, in.t, full_like(in.y, 10)).out;
  const Tensor dropped = m.forward(in.x, in.t, in.y, &drop).out;
  EXPECT_TRUE(allclose(dropped, null_out, 0, 0));
  EXPECT_FALSE(allclose(m.forward(in.x, in.t, in.y).out, null_out, 1e-6, 0));  // no generator
  m.eval();
  EXPECT_FALSE(allclose(m.forward(in.x, in.t, in.y, &drop).out, null_out, 1e-6, 0));
}

TEST(DiT, LabelDropoutDrawsIndependentlyPerSample) {
  DiTConfig cfg = small_dense();
  cfg.class_dropout_prob = 0.25;
  Generator gen(6);
  DiT m(cfg, gen);
  const Tensor y = zeros({4000}, DType::i64);
  Generator drop(8, 2);
  const auto labels = m.y_embedder().drop_labels(y, drop).to_vector<int64_t>();
  int64_t nulls = 0;
  for (int64_t v : labels) {
    ASSERT_TRUE(v == 0 || v == 10);
    nulls += v == 10;
  }
  EXPECT_NEAR(double(nulls) / 4000.0, 0.25, 0.03);
  Generator drop2(8, 2);  // same state, same draw
  EXPECT_EQ(m.y_embedder().drop_labels(y, drop2).to_vector<int64_t>(), labels);
}

// -- gradients
// ---------------------------------------------------------------------------------------

TEST(DiT, GradientReachesEveryParameterOnceTheZeroLayersMove) {
  for (const DiTConfig& cfg : {small_dense(), small_moe()}) {
    Generator gen(8);
    DiT m(cfg, gen);
    // Move only the zero-initialized layers; the rest keeps its init.
    Generator pert(9, 3);
    for (const auto& b : m.blocks())
      copy_into(b->adaLN_modulation().weight(), randn({192, 32}, pert) * 0.1);
    copy_into(m.final_layer().adaLN_modulation().weight(), randn({64, 32}, pert) * 0.1);
    copy_into(m.final_layer().linear().weight(), randn({32, 32}, pert) * 0.1);
    const Inputs in = make_inputs(cfg, 4, DType::f32);
    const DiT::Output o = m.forward(in.x, in.t, in.y);
    Tensor loss = sum(o.out * uniform(o.out.shape(), 0.5, 1.5, 7, DType::f32));
    if (o.aux_loss.defined()) loss = loss + o.aux_loss;
    loss.backward();
    for (const auto& [name, p] : m.named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_FALSE(all_zero(p.grad())) << name;
    }
    EXPECT_FALSE(m.pos_embed().grad().defined());
  }
}

TEST(DiT, InputGradientsMatchFiniteDifferences) {
  DiTConfig cfg = small_dense(1);
  cfg.input_size = 4;
  cfg.hidden_size = 16;
  cfg.depth = 1;
  cfg.num_heads = 2;
  Generator gen(10);
  DiT m(cfg, gen);
  m.to(DType::f64);
  randomize(m, 24, 0.3);
  const Tensor y = from_vector<int64_t>({3, 7}, {2});
  EXPECT_TRUE(
      testing::gradcheck([&](const std::vector<Tensor>& v) { return m.forward(v[0], v[1], y).out; },
                         {uniform({2, 1, 4, 4}, -1, 1, 12), from_vector<double>({0.3, 2.5}, {2})}));
}

// -- misuse
// ------------------------------------------------------------------------------------------

TEST(DiT, MisuseThrowsNamedErrors) {
  const std::string unknown = error_of([] { dit::dit_config("DiT-XXL/2"); });
  EXPECT_TRUE(contains(unknown, "[DiT]"));
  EXPECT_TRUE(contains(unknown, "DiT-XXL/2"));
  EXPECT_TRUE(contains(unknown, "DiT-MoE-G/2-16E2A"));
  EXPECT_TRUE(contains(unknown, "DiT-S/8"));

  Generator gen(1);
  auto bad = [&](auto edit) {
    DiTConfig c = small_dense();
    edit(c);
    return error_of([&] { DiT m(c, gen); });
  };
  EXPECT_TRUE(contains(bad([](DiTConfig& c) { c.num_heads = 5; }), "num_heads"));
  EXPECT_TRUE(contains(bad([](DiTConfig& c) { c.input_size = 7; }), "patch_size"));
  EXPECT_TRUE(contains(bad([](DiTConfig& c) {
                         c.hidden_size = 30;
                         c.num_heads = 3;
                       }),
                       "multiple of 4"));
  EXPECT_TRUE(contains(bad([](DiTConfig& c) {
                         c.num_experts = 2;
                         c.top_k = 3;
                       }),
                       "top_k"));
  EXPECT_TRUE(contains(bad([](DiTConfig& c) { c.class_dropout_prob = 1.5; }), "[0, 1]"));

  DiT m(small_dense(), gen);
  const Inputs in = make_inputs(small_dense(), 2, DType::f32);
  EXPECT_TRUE(contains(error_of([&] {
                         m.forward(zeros({2, 4, 6, 6}), in.t, in.y);
                       }),
                       "[DiT] expected x [B, 4, 8, 8]"));
  EXPECT_TRUE(contains(error_of([&] { m.forward(in.x, zeros({3}), in.y); }), "expected t [2]"));
  EXPECT_TRUE(contains(error_of([&] { m.forward(in.x, in.t, in.y.to(DType::f32)); }), "labels"));
  EXPECT_TRUE(contains(error_of([&] { m.forward(in.x.to(DType::f64), in.t, in.y); }), "dtype"));
  EXPECT_THROW(m.forward(in.x, in.t, from_vector<int64_t>({0, 11}, {2})), Error);
  EXPECT_THROW(m.blocks()[0]->moe(), Error);

  DiTConfig no_null = small_dense();
  no_null.class_dropout_prob = 0;
  DiT plain(no_null, gen);
  EXPECT_TRUE(
      contains(error_of([&] { plain.forward_with_cfg(in.x, in.t, in.y, 2.0); }), "null class"));
  EXPECT_THROW(plain.forward(in.x, in.t, full_like(in.y, 10)), Error);  // no null row
}

}  // namespace loom

namespace loom {
namespace {

// train.activation_checkpointing: per-block recomputation gives the same output and balance loss
// (bitwise) and every parameter gradient as the plain forward, for DiT and DiT-MoE. Gradients that
// several blocks feed (the conditioning) are summed in another order, so they agree to rounding:
// f64 here, 1e-10 relative.
TEST(DiT, ActivationCheckpointingChangesNothingButMemory) {
  for (const DiTConfig& c : {small_dense(), small_moe()}) {
    Generator init(11);
    DiT m(c, init);
    randomize(m, 12);
    m.to(DType::f64);
    const Inputs in = make_inputs(c, 3, DType::f64);
    auto run = [&](bool on) {
      m.set_activation_checkpointing(on);
      m.zero_grad();
      const DiT::Output o = m.forward(in.x, in.t, in.y);
      Tensor loss = mean(square(o.out));
      if (o.aux_loss.defined()) loss = loss + o.aux_loss;
      loss.backward();
      std::vector<Tensor> v{o.out.detach(), loss.detach()};
      for (const auto& [name, p] : m.named_parameters()) v.push_back(p.grad().clone());
      return v;
    };
    const auto plain = run(false), ckpt = run(true);
    ASSERT_EQ(plain.size(), ckpt.size());
    for (size_t i = 0; i < plain.size(); ++i)
      EXPECT_TRUE(testing::allclose(ckpt[i], plain[i], i < 2 ? 0 : 1e-14, i < 2 ? 0 : 1e-10))
          << (c.num_experts ? "moe" : "dense") << " item " << i;
  }
}

}  // namespace
}  // namespace loom
