#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/nn/nn.h"
#include "testing.h"

namespace loom {
using testing::allclose;
using testing::gradcheck;
using testing::uniform;

namespace {

using namespace loom::nn;

// A two-level model shaped like a DiT trunk: embed, a "blocks" container, a fixed buffer.
struct Block : Module {
  explicit Block(Generator& gen) {
    norm = register_module("norm", std::make_shared<LayerNorm>(LayerNormConfig{.dim = 8}));
    attn = register_module("attn", std::make_shared<MultiHeadAttention>(
                                       MultiHeadAttentionConfig{.dim = 8, .num_heads = 2}, gen));
    mlp = register_module(
        "mlp", std::make_shared<Mlp>(MlpConfig{.in_features = 8, .hidden_features = 16}, gen));
  }
  Tensor forward(const Tensor& x) const {
    const Tensor h = x + attn->forward(norm->forward(x));
    return h + mlp->forward(h);
  }
  std::shared_ptr<LayerNorm> norm;
  std::shared_ptr<MultiHeadAttention> attn;
  std::shared_ptr<Mlp> mlp;
};

struct Trunk : Module {
  explicit Trunk(Generator& gen) {
    embed = register_module(
        "embed", std::make_shared<Linear>(LinearConfig{.in_features = 4, .out_features = 8}, gen));
    blocks = register_module("blocks", std::make_shared<Module>());
    for (int i = 0; i < 2; ++i)
      block.push_back(blocks->register_module(std::to_string(i), std::make_shared<Block>(gen)));
    pos = register_buffer("pos_embed", arange(0, 3 * 8).reshape({1, 3, 8}) * 0.01);
  }
  // x [B, 3, 4] -> [B, 3, 8]
  Tensor forward(const Tensor& x) const {
    Tensor h = embed->forward(x) + pos;
    for (const auto& b : block) h = b->forward(h);
    return h;
  }
  std::shared_ptr<Linear> embed;
  std::shared_ptr<Module> blocks;
  std::vector<std::shared_ptr<Block>> block;
  Tensor pos;
};

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& items) {
  std::vector<std::string> out;
  for (const auto& [name, t] : items) out.push_back(name);
  return out;
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

// Finite-difference check of every parameter gradient of a module already converted to f64,
// for loss = sum(f() * w) with a fixed random w.
::testing::AssertionResult check_parameter_grads(Module& m, const std::function<Tensor()>& f,
                                                 double eps = 1e-6, double atol = 1e-6,
                                                 double rtol = 1e-4) {
  for (Tensor p : m.parameters()) p.zero_grad();
  const Tensor out = f();
  const Tensor w = uniform(out.shape(), 0.5, 1.5, 98);
  sum(out * w).backward();
  NoGradGuard no_grad;
  for (const auto& [name, p] : m.named_parameters()) {
    if (p.dtype() != DType::f64 || !p.is_contiguous())
      return ::testing::AssertionFailure() << name << " is not a contiguous f64 tensor";
    if (!p.grad().defined()) return ::testing::AssertionFailure() << name << " got no gradient";
    const auto analytic = p.grad().to_vector<double>();
    double* d = p.data<double>();
    for (int64_t i = 0; i < p.numel(); ++i) {
      const double orig = d[i];
      d[i] = orig + eps;
      const double lp = sum(f() * w).item();
      d[i] = orig - eps;
      const double lm = sum(f() * w).item();
      d[i] = orig;
      const double numeric = (lp - lm) / (2 * eps);
      if (!(std::abs(numeric - analytic[size_t(i)]) <= atol + rtol * std::abs(numeric)))
        return ::testing::AssertionFailure() << name << " element " << i << ": analytic "
                                             << analytic[size_t(i)] << " vs numeric " << numeric;
    }
  }
  return ::testing::AssertionSuccess();
}

// Softmax over the last dim from exp/sum, independent of the softmax op.
Tensor manual_softmax(const Tensor& s) {
  const Tensor e = exp(s - amax(s, {-1}, true));
  return e / sum(e, {-1}, true);
}

}  // namespace

// -- Module base ----------------------------------------------------------------------------------

TEST(Module, NamedParametersAreDottedAndInRegistrationOrder) {
  Generator gen(1);
  Trunk m(gen);
  std::vector<std::string> expected = {"embed.weight", "embed.bias"};
  for (const std::string b : {"blocks.0.", "blocks.1."})
    for (const char* p :
         {"norm.weight", "norm.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
          "attn.proj.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"})
      expected.push_back(b + p);
  EXPECT_EQ(names_of(m.named_parameters()), expected);
  EXPECT_EQ(names_of(m.named_buffers()), std::vector<std::string>{"pos_embed"});
  EXPECT_EQ(m.parameters().size(), expected.size());
  for (const Tensor& p : m.parameters()) EXPECT_TRUE(p.requires_grad());
  EXPECT_FALSE(m.pos.requires_grad());
  EXPECT_TRUE(m.named_parameters()[2].second.same(m.block[0]->norm->weight()));

  // embed 4*8+8; per block: norm 2*8, qkv 24*8+24, proj 8*8+8, fc1 16*8+16, fc2 8*16+8.
  const int64_t per_block = 16 + 216 + 72 + 144 + 136;
  EXPECT_EQ(m.num_parameters(), 40 + 2 * per_block);
  Tensor(m.block[1]->mlp->fc2().weight()).set_requires_grad(false);
  EXPECT_EQ(m.num_parameters(/*trainable_only=*/true), 40 + 2 * per_block - 128);

  const auto mods = m.named_modules();
  ASSERT_EQ(mods.size(), 1u + 1 + 1 + 2 * 8);  // self, embed, blocks, 2 x (block + 7 inside)
  EXPECT_EQ(mods[0].first, "");
  EXPECT_EQ(mods[3].first, "blocks.0");
  EXPECT_EQ(mods[6].first, "blocks.0.attn.qkv");
  EXPECT_EQ(mods[6].second, &m.block[0]->attn->qkv());
}

TEST(Module, StateDictHoldsParametersThenBuffersOfEachModule) {
  Generator gen(1);
  Trunk m(gen);
  const StateDict sd = m.state_dict();
  EXPECT_EQ(sd.size(), m.named_parameters().size() + 1);
  EXPECT_EQ(sd.begin()->first, "embed.weight");
  EXPECT_EQ((sd.end() - 1)->first, "pos_embed");  // buffers follow every parameter
  EXPECT_TRUE(sd.at("blocks.1.attn.proj.bias").same(m.block[1]->attn->proj().bias()));
  EXPECT_EQ(sd.find("nope"), nullptr);
  EXPECT_TRUE(contains(error_of([&] { sd.at("nope"); }), "'nope'"));
}

TEST(Module, TiedParameterIsListedOnceButSavedUnderEachName) {
  Generator gen(1);
  Module m;
  auto a = m.register_module(
      "a", std::make_shared<Linear>(LinearConfig{.in_features = 3, .out_features = 3}, gen));
  m.register_parameter("tied", a->weight());
  EXPECT_EQ(names_of(m.named_parameters()), (std::vector<std::string>{"tied", "a.bias"}));
  EXPECT_EQ(m.num_parameters(), 12);
  EXPECT_EQ(m.state_dict().size(), 3u);
}

TEST(Module, RegistrationRejectsBadNamesAndTensors) {
  Module m;
  m.register_parameter("w", zeros({2}));
  EXPECT_TRUE(contains(error_of([&] { m.register_parameter("w", zeros({2})); }), "'w'"));
  EXPECT_TRUE(contains(error_of([&] { m.register_buffer("w", zeros({2})); }), "already taken"));
  EXPECT_TRUE(contains(error_of([&] { m.register_module("w", std::make_shared<Module>()); }),
                       "already taken"));
  EXPECT_TRUE(contains(error_of([&] { m.register_parameter("a.b", zeros({2})); }), "'a.b'"));
  EXPECT_THROW(m.register_parameter("", zeros({2})), Error);
  EXPECT_THROW(m.register_parameter("i", zeros({2}, DType::i64)), Error);
  Tensor leaf = ones({2}).set_requires_grad();
  EXPECT_TRUE(contains(error_of([&] { m.register_parameter("y", leaf * 2.0); }), "leaf"));
  EXPECT_TRUE(contains(error_of([&] { m.register_buffer("b", leaf); }), "requires grad"));
  EXPECT_THROW(m.register_module("m", std::shared_ptr<Module>()), Error);
  m.register_buffer("steps", zeros({1}, DType::i64));  // integer buffers are fine
  EXPECT_EQ(m.named_buffers().size(), 1u);
}

TEST(Module, StateDictRoundTripReproducesOutputsAndKeepsIdentity) {
  Generator g1(1), g2(2);
  Trunk a(g1), b(g2);
  const Tensor x = uniform({2, 3, 4}, -1, 1, 5, DType::f32);
  ASSERT_FALSE(allclose(a.forward(x), b.forward(x), 1e-3, 0));

  std::vector<TensorImpl*> before;
  for (const Tensor& p : b.parameters()) before.push_back(p.impl_ptr());
  const Tensor held = b.block[0]->attn->qkv().weight();

  b.load_state_dict(a.state_dict());
  EXPECT_TRUE(allclose(b.forward(x), a.forward(x), 0, 0));
  std::vector<TensorImpl*> after;
  for (const Tensor& p : b.parameters()) after.push_back(p.impl_ptr());
  EXPECT_EQ(before, after);
  EXPECT_TRUE(held.same(b.block[0]->attn->qkv().weight()));
  EXPECT_TRUE(allclose(held, a.block[0]->attn->qkv().weight(), 0, 0));
  EXPECT_FALSE(held.same(a.block[0]->attn->qkv().weight()));  // copied, not aliased
  EXPECT_TRUE(held.requires_grad());
}

TEST(Module, LoadStateDictConvertsDtypes) {
  Generator g1(1), g2(2);
  Linear a({.in_features = 3, .out_features = 2}, g1), b({.in_features = 3, .out_features = 2}, g2);
  StateDict sd;
  for (const auto& [name, t] : a.state_dict()) sd.insert(name, t.to(DType::f64));
  b.load_state_dict(sd);
  EXPECT_EQ(b.weight().dtype(), DType::f32);
  EXPECT_TRUE(allclose(b.weight(), a.weight(), 0, 0));
}

TEST(Module, LoadStateDictErrorsNameTheKeyAndLeaveTheModuleUntouched) {
  Generator g1(1), g2(2);
  Trunk a(g1), b(g2);
  const Tensor before = b.embed->weight().clone();
  const Tensor own_fc1 = b.block[1]->mlp->fc1().weight().clone();

  StateDict missing;
  for (const auto& [name, t] : a.state_dict())
    if (name != "blocks.1.mlp.fc1.weight") missing.insert(name, t);
  const std::string e1 = error_of([&] { b.load_state_dict(missing); });
  EXPECT_TRUE(contains(e1, "missing")) << e1;
  EXPECT_TRUE(contains(e1, "'blocks.1.mlp.fc1.weight'")) << e1;

  StateDict extra = a.state_dict();
  extra.insert("blocks.2.attn.qkv.weight", zeros({24, 8}));
  const std::string e2 = error_of([&] { b.load_state_dict(extra); });
  EXPECT_TRUE(contains(e2, "unexpected")) << e2;
  EXPECT_TRUE(contains(e2, "'blocks.2.attn.qkv.weight'")) << e2;

  StateDict wrong;
  for (const auto& [name, t] : a.state_dict())
    wrong.insert(name, name == "blocks.0.attn.proj.weight" ? zeros({8, 7}) : t);
  const std::string e3 = error_of([&] { b.load_state_dict(wrong); });
  EXPECT_TRUE(contains(e3, "'blocks.0.attn.proj.weight'")) << e3;
  EXPECT_TRUE(contains(e3, "expected [8, 8]")) << e3;
  EXPECT_TRUE(contains(e3, "got [8, 7]")) << e3;
  EXPECT_THROW(b.load_state_dict(wrong, /*strict=*/false), Error);  // shapes are always checked

  EXPECT_TRUE(allclose(b.embed->weight(), before, 0, 0));  // nothing was written

  // Non-strict: present keys load, missing and unexpected ones are skipped.
  b.load_state_dict(missing, /*strict=*/false);
  EXPECT_TRUE(allclose(b.embed->weight(), a.embed->weight(), 0, 0));
  EXPECT_TRUE(allclose(b.block[1]->mlp->fc1().weight(), own_fc1, 0, 0));
  EXPECT_FALSE(allclose(b.block[1]->mlp->fc1().weight(), a.block[1]->mlp->fc1().weight(), 1e-3, 0));
  b.load_state_dict(extra, /*strict=*/false);
}

TEST(Module, TrainAndEvalPropagateToEveryDescendant) {
  Generator gen(1);
  Trunk m(gen);
  auto all_training = [&](bool on) {
    for (const auto& [name, mod] : m.named_modules())
      if (mod->is_training() != on) return false;
    return true;
  };
  EXPECT_TRUE(all_training(true));
  m.eval();
  EXPECT_TRUE(all_training(false));
  m.block[1]->train();  // a subtree only
  EXPECT_FALSE(m.is_training());
  EXPECT_TRUE(m.block[1]->mlp->fc2().is_training());
  EXPECT_FALSE(m.block[0]->mlp->fc2().is_training());
  m.train(true);
  EXPECT_TRUE(all_training(true));
}

TEST(Module, ZeroGradZeroesInPlace) {
  Generator gen(1);
  Linear lin({.in_features = 3, .out_features = 2}, gen);
  const Tensor x = uniform({4, 3}, -1, 1, 5, DType::f32);
  sum(lin.forward(x)).backward();
  const Tensor g = lin.weight().grad();
  ASSERT_TRUE(g.defined());
  const Tensor first = g.clone();
  lin.zero_grad();
  EXPECT_TRUE(lin.weight().grad().same(g));
  EXPECT_TRUE(allclose(g, zeros({2, 3}), 0, 0));
  sum(lin.forward(x)).backward();
  EXPECT_TRUE(allclose(lin.weight().grad(), first, 1e-6, 1e-6));
}

TEST(Module, ToDtypeKeepsParameterIdentity) {
  Generator gen(1);
  Trunk m(gen);
  const Tensor x = uniform({2, 3, 4}, -1, 1, 5, DType::f32);
  const Tensor y32 = m.forward(x);
  const Tensor held = m.embed->weight();
  m.to(DType::f64);
  EXPECT_EQ(held.dtype(), DType::f64);
  EXPECT_TRUE(held.requires_grad());
  EXPECT_EQ(m.pos.dtype(), DType::f64);
  EXPECT_TRUE(allclose(m.forward(x.to(DType::f64)), y32, 1e-5, 1e-5));
  EXPECT_THROW(m.to(DType::i32), Error);
}

// -- layers against manual compositions ---------------------------------------------------------

TEST(Linear, EqualsManualAffineMap) {
  Generator gen(3);
  Linear lin({.in_features = 5, .out_features = 3}, gen);
  EXPECT_EQ(lin.weight().shape(), (Shape{3, 5}));
  EXPECT_TRUE(allclose(lin.bias(), zeros({3}), 0, 0));  // default init
  init::normal_(lin.bias(), gen);
  const Tensor x = uniform({2, 4, 5}, -1, 1, 7, DType::f32);
  const Tensor y = lin.forward(x);
  ASSERT_EQ(y.shape(), (Shape{2, 4, 3}));
  const auto xv = x.to_vector<double>(), wv = lin.weight().to_vector<double>(),
             bv = lin.bias().to_vector<double>(), yv = y.to_vector<double>();
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t o = 0; o < 3; ++o) {
      double acc = bv[size_t(o)];
      for (int64_t i = 0; i < 5; ++i) acc += xv[size_t(r * 5 + i)] * wv[size_t(o * 5 + i)];
      EXPECT_NEAR(yv[size_t(r * 3 + o)], acc, 1e-5);
    }
  Linear nobias({.in_features = 5, .out_features = 3, .bias = false}, gen);
  EXPECT_EQ(names_of(nobias.named_parameters()), std::vector<std::string>{"weight"});
  EXPECT_TRUE(allclose(nobias.forward(x), matmul(x, nobias.weight().t()), 1e-6));
  EXPECT_TRUE(contains(error_of([&] { lin.forward(ones({2, 4})); }), "[Linear]"));
  EXPECT_THROW(Linear({.in_features = 0, .out_features = 3}, gen), Error);
}

TEST(Mlp, EqualsManualComposition) {
  Generator gen(4);
  Mlp mlp({.in_features = 6, .hidden_features = 12, .out_features = 5}, gen);
  init::normal_(mlp.fc1().bias(), gen);
  init::normal_(mlp.fc2().bias(), gen);
  const Tensor x = uniform({3, 6}, -2, 2, 8);
  mlp.to(DType::f64);
  const Tensor h = matmul(x, mlp.fc1().weight().t()) + mlp.fc1().bias();
  const Tensor g = 0.5 * h * (1.0 + tanh(std::sqrt(2.0 / M_PI) * (h + 0.044715 * h * h * h)));
  const Tensor ref = matmul(g, mlp.fc2().weight().t()) + mlp.fc2().bias();
  EXPECT_TRUE(allclose(mlp.forward(x), ref, 1e-12, 1e-10));
  Mlp same_out({.in_features = 6, .hidden_features = 4}, gen);
  EXPECT_EQ(same_out.fc2().weight().shape(), (Shape{6, 4}));
}

TEST(SwiGLU, EqualsManualComposition) {
  Generator gen(5);
  SwiGLU ffn({.dim = 6, .hidden_dim = 10}, gen);
  EXPECT_EQ(names_of(ffn.named_parameters()),
            (std::vector<std::string>{"gate_proj.weight", "up_proj.weight", "down_proj.weight"}));
  ffn.to(DType::f64);
  const Tensor x = uniform({2, 3, 6}, -2, 2, 9);
  const Tensor a = matmul(x, ffn.gate_proj().weight().t());
  const Tensor u = matmul(x, ffn.up_proj().weight().t());
  const Tensor ref = matmul(a / (1.0 + exp(-a)) * u, ffn.down_proj().weight().t());
  EXPECT_TRUE(allclose(ffn.forward(x), ref, 1e-12, 1e-10));
}

TEST(LayerNorm, EqualsManualFormulaWithAndWithoutAffine) {
  Generator gen(6);
  const Tensor x = uniform({2, 3, 8}, -2, 2, 10);
  const Tensor mu = mean(x, {-1}, true);
  const Tensor xhat = (x - mu) / sqrt(mean(square(x - mu), {-1}, true) + 1e-6);
  LayerNorm plain({.dim = 8, .eps = 1e-6, .affine = false});
  EXPECT_TRUE(plain.named_parameters().empty());
  EXPECT_TRUE(allclose(plain.forward(x), xhat, 1e-10, 1e-8));

  LayerNorm ln({.dim = 8, .eps = 1e-6});
  EXPECT_TRUE(allclose(ln.weight(), ones({8}), 0, 0));
  EXPECT_TRUE(allclose(ln.bias(), zeros({8}), 0, 0));
  init::normal_(ln.weight(), gen);
  init::normal_(ln.bias(), gen);
  ln.to(DType::f64);
  EXPECT_TRUE(allclose(ln.forward(x), xhat * ln.weight() + ln.bias(), 1e-10, 1e-8));
  EXPECT_THROW(ln.forward(ones({2, 7}, DType::f64)), Error);
}

TEST(RMSNorm, EqualsManualFormula) {
  Generator gen(7);
  RMSNorm norm({.dim = 8});
  EXPECT_TRUE(allclose(norm.weight(), ones({8}), 0, 0));
  init::normal_(norm.weight(), gen);
  norm.to(DType::f64);
  const Tensor x = uniform({4, 8}, -2, 2, 11);
  const Tensor ref = x / sqrt(mean(square(x), {-1}, true) + 1e-6) * norm.weight();
  EXPECT_TRUE(allclose(norm.forward(x), ref, 1e-10, 1e-8));
  RMSNorm plain({.dim = 8, .affine = false});
  EXPECT_TRUE(plain.named_parameters().empty());
}

TEST(Embedding, PicksRowsOfTheTable) {
  Generator gen(8);
  Embedding emb({.num_embeddings = 5, .dim = 3}, gen);
  const Tensor idx = from_vector<int64_t>({4, 0, 4, 2}, {2, 2});
  const Tensor y = emb.forward(idx);
  ASSERT_EQ(y.shape(), (Shape{2, 2, 3}));
  const std::vector<int64_t> ids = {4, 0, 4, 2};
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_TRUE(
        allclose(y.reshape({4, 3}).select(0, int64_t(i)), emb.weight().select(0, ids[i]), 0, 0));
  EXPECT_THROW(emb.forward(from_vector<int64_t>({5}, {1})), Error);
  EXPECT_THROW(emb.forward(ones({2})), Error);
}

TEST(Conv2d, PatchEmbeddingEqualsPatchifyThenLinear) {
  Generator gen(9);
  const int64_t N = 2, C = 3, I = 4, p = 2, D = 5, G = I / p;
  Conv2d conv({.in_channels = C, .out_channels = D, .kernel_size = {p, p}, .stride = {p, p}}, gen);
  init::normal_(conv.bias(), gen);
  const Tensor x = uniform({N, C, I, I}, -1, 1, 12, DType::f32);
  // [N, C, G, p, G, p] -> [N, G, G, C, p, p] -> tokens [N, G*G, C*p*p]
  const Tensor tokens =
      x.reshape({N, C, G, p, G, p}).permute({0, 2, 4, 1, 3, 5}).reshape({N, G * G, C * p * p});
  const Tensor ref = matmul(tokens, conv.weight().reshape({D, C * p * p}).t()) + conv.bias();
  const Tensor y = conv.forward(x);
  ASSERT_EQ(y.shape(), (Shape{N, D, G, G}));
  EXPECT_TRUE(allclose(y.flatten(2).transpose(1, 2), ref, 1e-5, 1e-5));
  EXPECT_TRUE(contains(error_of([&] { conv.forward(ones({N, C + 1, I, I})); }), "[Conv2d]"));
}

TEST(Conv2d, StrideAndPaddingGiveTheExpectedShape) {
  Generator gen(10);
  Conv2d conv({.in_channels = 2,
               .out_channels = 3,
               .kernel_size = {3, 3},
               .padding = {1, 1},
               .bias = false},
              gen);
  EXPECT_EQ(names_of(conv.named_parameters()), std::vector<std::string>{"weight"});
  EXPECT_EQ(conv.forward(ones({1, 2, 5, 6})).shape(), (Shape{1, 3, 5, 6}));
  Conv2d strided({.in_channels = 2,
                  .out_channels = 3,
                  .kernel_size = {3, 3},
                  .stride = {2, 2},
                  .padding = {1, 1}},
                 gen);
  EXPECT_EQ(strided.forward(ones({1, 2, 5, 6})).shape(), (Shape{1, 3, 3, 3}));
  EXPECT_THROW(Conv2d({.in_channels = 2, .out_channels = 3, .kernel_size = {0, 3}}, gen), Error);
}

TEST(Conv3d, PatchEmbeddingEqualsPatchifyThenLinear) {
  Generator gen(11);
  const int64_t N = 1, C = 2, F = 4, I = 4, pt = 2, p = 2, D = 3;
  Conv3d conv(
      {.in_channels = C, .out_channels = D, .kernel_size = {pt, p, p}, .stride = {pt, p, p}}, gen);
  init::normal_(conv.bias(), gen);
  const Tensor x = uniform({N, C, F, I, I}, -1, 1, 13, DType::f32);
  const int64_t Gf = F / pt, G = I / p;
  const Tensor tokens = x.reshape({N, C, Gf, pt, G, p, G, p})
                            .permute({0, 2, 4, 6, 1, 3, 5, 7})
                            .reshape({N, Gf * G * G, C * pt * p * p});
  const Tensor ref = matmul(tokens, conv.weight().reshape({D, -1}).t()) + conv.bias();
  const Tensor y = conv.forward(x);
  ASSERT_EQ(y.shape(), (Shape{N, D, Gf, G, G}));
  EXPECT_TRUE(allclose(y.flatten(2).transpose(1, 2), ref, 1e-5, 1e-5));
}

namespace {

// Attention written head by head from the definition: per head h, q/k/v from the matching rows
// of the qkv weight, softmax from exp/sum, and the output projection applied per head slice.
Tensor manual_attention(const MultiHeadAttention& mha, const Tensor& x, const Tensor& mask) {
  const int64_t D = mha.config().dim, H = mha.config().num_heads, hd = D / H;
  const Tensor& W = mha.qkv().weight();
  const Tensor& b = mha.qkv().bias();
  Tensor y = mha.proj().bias();
  for (int64_t h = 0; h < H; ++h) {
    auto project = [&](int64_t which) {
      const int64_t row = which * D + h * hd;
      return matmul(x, W.narrow(0, row, hd).t()) + b.narrow(0, row, hd);
    };
    const Tensor q = project(0), k = project(1), v = project(2);  // [B, T, hd]
    Tensor s = matmul(q, k.transpose(1, 2)) / std::sqrt(double(hd));
    if (mask.defined()) s = where(mask, s, full_like(s, -1e30));
    const Tensor o = matmul(manual_softmax(s), v);
    y = y + matmul(o, mha.proj().weight().narrow(1, h * hd, hd).t());
  }
  return y;
}

}  // namespace

TEST(MultiHeadAttention, EqualsManualPerHeadComputation) {
  Generator gen(12);
  MultiHeadAttention mha({.dim = 8, .num_heads = 2}, gen);
  init::normal_(mha.qkv().bias(), gen, 0, 0.5);
  init::normal_(mha.proj().bias(), gen, 0, 0.5);
  const Tensor x = uniform({2, 5, 8}, -1, 1, 14, DType::f32);
  const Tensor y = mha.forward(x);
  ASSERT_EQ(y.shape(), (Shape{2, 5, 8}));
  EXPECT_TRUE(allclose(y, manual_attention(mha, x, Tensor()), 1e-5, 1e-4));

  // Causal mask [T, T]; row t keeps keys <= t.
  const Tensor mask = ge(arange(0, 5).unsqueeze(1), arange(0, 5).unsqueeze(0));
  const Tensor ym = mha.forward(x, mask);
  EXPECT_TRUE(allclose(ym, manual_attention(mha, x, mask), 1e-5, 1e-4));
  EXPECT_FALSE(allclose(ym, y, 1e-3, 0));
  // The last query sees every key, so the mask changes nothing there.
  EXPECT_TRUE(allclose(ym.narrow(1, 4, 1), y.narrow(1, 4, 1), 1e-6, 1e-5));

  EXPECT_THROW(mha.forward(ones({2, 5, 6})), Error);
  EXPECT_THROW(mha.forward(x, ones({5, 5})), Error);
  EXPECT_THROW(MultiHeadAttention({.dim = 8, .num_heads = 3}, gen), Error);
}

// -- gradients ----------------------------------------------------------------------------------

TEST(Modules, GradientsReachEveryParameter) {
  Generator gen(13);
  Trunk trunk(gen);
  Embedding emb({.num_embeddings = 4, .dim = 8}, gen);
  RMSNorm rms({.dim = 8});
  SwiGLU ffn({.dim = 8, .hidden_dim = 12}, gen);
  Conv2d conv2({.in_channels = 2, .out_channels = 4, .kernel_size = {2, 2}}, gen);
  Conv3d conv3({.in_channels = 2, .out_channels = 4, .kernel_size = {1, 2, 2}}, gen);

  // A weighted sum: with a plain sum the LayerNorm weight's gradient is sum(xhat) = 0 per row.
  auto loss = [](const Tensor& y) { return sum(y * uniform(y.shape(), 0.5, 1.5, 3, y.dtype())); };
  Tensor total = loss(trunk.forward(uniform({2, 3, 4}, -1, 1, 1, DType::f32)));
  total = total + loss(ffn.forward(rms.forward(emb.forward(from_vector<int64_t>({1, 3, 0}, {3})))));
  total = total + loss(conv2.forward(uniform({1, 2, 3, 3}, -1, 1, 2, DType::f32)));
  total = total + loss(conv3.forward(uniform({1, 2, 2, 3, 3}, -1, 1, 4, DType::f32)));
  total.backward();

  for (const Module* m : std::vector<const Module*>{&trunk, &emb, &rms, &ffn, &conv2, &conv3})
    for (const auto& [name, p] : m->named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_EQ(p.grad().shape(), p.shape()) << name;
      EXPECT_GT(amax(abs(p.grad())).item(), 0.0) << name;
    }
  // Unused embedding rows (2) get exactly zero.
  EXPECT_EQ(amax(abs(emb.weight().grad().select(0, 2))).item(), 0.0);
}

TEST(Modules, LinearGradcheck) {
  Generator gen(14);
  Linear lin({.in_features = 4, .out_features = 3}, gen);
  init::normal_(lin.bias(), gen);
  lin.to(DType::f64);
  const Tensor x = uniform({2, 3, 4}, -1, 1, 15);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return lin.forward(in[0]); }, {x}));
  EXPECT_TRUE(check_parameter_grads(lin, [&] { return lin.forward(x); }));
}

TEST(Modules, MultiHeadAttentionGradcheck) {
  Generator gen(15);
  MultiHeadAttention mha({.dim = 8, .num_heads = 2}, gen);
  init::normal_(mha.qkv().bias(), gen, 0, 0.5);
  mha.to(DType::f64);
  const Tensor x = uniform({2, 3, 8}, -1, 1, 16);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return mha.forward(in[0]); }, {x}));
  EXPECT_TRUE(check_parameter_grads(mha, [&] { return mha.forward(x); }));
  const Tensor mask = from_vector<uint8_t>({1, 0, 0, 1, 1, 0, 1, 0, 1}, {3, 3}, DType::boolean);
  EXPECT_TRUE(check_parameter_grads(mha, [&] { return mha.forward(x, mask); }));
}

TEST(Modules, MlpSwiGLUAndNormsGradcheck) {
  Generator gen(16);
  Mlp mlp({.in_features = 4, .hidden_features = 6}, gen);
  SwiGLU ffn({.dim = 4, .hidden_dim = 6}, gen);
  LayerNorm ln({.dim = 4});
  RMSNorm rms({.dim = 4});
  init::normal_(ln.weight(), gen);
  init::normal_(rms.weight(), gen);
  for (Module* m : std::vector<Module*>{&mlp, &ffn, &ln, &rms}) m->to(DType::f64);
  const Tensor x = uniform({3, 4}, -1, 1, 17);
  EXPECT_TRUE(check_parameter_grads(mlp, [&] { return mlp.forward(x); }));
  EXPECT_TRUE(check_parameter_grads(ffn, [&] { return ffn.forward(x); }));
  EXPECT_TRUE(check_parameter_grads(ln, [&] { return ln.forward(x); }));
  EXPECT_TRUE(check_parameter_grads(rms, [&] { return rms.forward(x); }));
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return ffn.forward(in[0]); }, {x}));
}

TEST(Modules, ConvGradcheck) {
  Generator gen(17);
  Conv2d conv({.in_channels = 2, .out_channels = 3, .kernel_size = {2, 2}, .padding = {1, 1}}, gen);
  init::normal_(conv.bias(), gen);
  conv.to(DType::f64);
  const Tensor x = uniform({1, 2, 3, 3}, -1, 1, 18);
  EXPECT_TRUE(check_parameter_grads(conv, [&] { return conv.forward(x); }));
}

// -- init ---------------------------------------------------------------------------------------

TEST(Init, XavierUniformRespectsTheBoundAndFillsIt) {
  Generator gen(20);
  Linear lin({.in_features = 300, .out_features = 200}, gen);
  const double bound = std::sqrt(6.0 / 500.0);
  const Tensor w = lin.weight().to(DType::f64);
  EXPECT_LE(amax(abs(w)).item(), bound);
  EXPECT_GT(amax(w).item(), 0.99 * bound);
  EXPECT_LT(amin(w).item(), -0.99 * bound);
  EXPECT_NEAR(mean(w).item(), 0.0, 0.01 * bound);
  EXPECT_NEAR(var(w).item(), bound * bound / 3.0, 0.02 * bound * bound / 3.0);

  // Conv: DiT's fans on the [Cout, Cin*k*k] view, i.e. bound sqrt(6 / (Cin*k*k + Cout)).
  Conv2d conv({.in_channels = 16, .out_channels = 64, .kernel_size = {4, 4}}, gen);
  const double cbound = std::sqrt(6.0 / (16 * 16 + 64));
  EXPECT_LE(amax(abs(conv.weight())).item(), cbound);
  EXPECT_GT(amax(abs(conv.weight())).item(), 0.98 * cbound);
  EXPECT_TRUE(allclose(conv.bias(), zeros({64}), 0, 0));

  // On a 4-D tensor the function itself uses PyTorch's fans (receptive field on both sides).
  const Tensor t = empty({64, 16, 4, 4});
  init::xavier_uniform_(t, gen, 2.0);
  const double tbound = 2.0 * std::sqrt(6.0 / (16 * 16 + 64 * 16));
  EXPECT_LE(amax(abs(t)).item(), tbound);
  EXPECT_GT(amax(abs(t)).item(), 0.98 * tbound);
  EXPECT_THROW(init::xavier_uniform_(empty({5}), gen), Error);
}

TEST(Init, NormalHasTheRequestedMoments) {
  Generator gen(21);
  const Tensor t = empty({1000, 1000});
  init::normal_(t, gen, 0.5, 0.02);
  EXPECT_NEAR(mean(t).item(), 0.5, 1e-4);
  EXPECT_NEAR(std::sqrt(var(t).item()), 0.02, 0.02 * 0.005);
  Embedding emb({.num_embeddings = 1001, .dim = 512, .init_std = 0.02}, gen);
  EXPECT_NEAR(std::sqrt(var(emb.weight()).item()), 0.02, 0.02 * 0.01);
}

TEST(Init, KaimingUniformBound) {
  Generator gen(22);
  const Tensor w = empty({64, 256});
  init::kaiming_uniform_(w, gen, std::sqrt(5.0));
  const double bound = 1.0 / std::sqrt(256.0);  // PyTorch's Linear default
  EXPECT_LE(amax(abs(w)).item(), bound);
  EXPECT_GT(amax(abs(w)).item(), 0.99 * bound);
  init::kaiming_uniform_(w, gen);
  EXPECT_GT(amax(abs(w)).item(), 0.99 * std::sqrt(6.0 / 256.0));
}

TEST(Init, DeterministicPerGeneratorAndWritesThroughViews) {
  Generator a(7), b(7), c(7, /*stream=*/1);
  Linear la({.in_features = 8, .out_features = 8}, a), lb({.in_features = 8, .out_features = 8}, b),
      lc({.in_features = 8, .out_features = 8}, c);
  EXPECT_TRUE(allclose(la.weight(), lb.weight(), 0, 0));
  EXPECT_FALSE(allclose(la.weight(), lc.weight(), 1e-3, 0));
  // The generator advanced: a second layer from `a` differs from the first.
  Linear la2({.in_features = 8, .out_features = 8}, a);
  EXPECT_FALSE(allclose(la.weight(), la2.weight(), 1e-3, 0));

  const Tensor m = zeros({4, 6});
  init::ones_(m.narrow(1, 2, 2));
  const Tensor col_sums = sum(m, {0});
  EXPECT_TRUE(allclose(col_sums, from_vector<float>({0, 0, 4, 4, 0, 0}, {6}), 0, 0));
  init::zeros_(m);
  EXPECT_EQ(amax(abs(m)).item(), 0.0);
  EXPECT_THROW(init::normal_(zeros({2}, DType::i64), a), Error);
}

}  // namespace loom
