// PyTorch parity: each fixture in tests/golden/fixtures (made by gen_fixtures.py) holds f64
// inputs, torch's output "out", an upstream gradient "grad_out" and torch's input gradients
// "grad.<input>". Each test recomputes the output with loom's functional ops, backpropagates
// grad_out, and compares the output and every stored gradient.
#include <cstdlib>
#include <map>
#include <set>

#include "core/safetensors.h"
#include "testing.h"

namespace loom {
namespace {

using testing::allclose;

// f64 end to end: differences come only from summation order.
constexpr double kAtol = 1e-10;
constexpr double kRtol = 1e-8;

std::string fixture_path(const std::string& name) {
  const char* root = std::getenv("LOOM_SOURCE_DIR");
  return std::string(root ? root : ".") + "/tests/golden/fixtures/" + name + ".safetensors";
}

class Fixture {
 public:
  explicit Fixture(const std::string& name) : name_(name) {
    SafetensorsFile f = load_safetensors(fixture_path(name));
    for (auto& [key, t] : f.tensors) tensors_.emplace(key, t);
    metadata_ = std::move(f.metadata);
  }

  // A stored tensor as it is (for expected values and integer inputs).
  Tensor operator[](const std::string& key) const {
    const auto it = tensors_.find(key);
    LOOM_CHECK(it != tensors_.end(), "[parity] fixture ", name_, " has no tensor \"", key, "\"");
    return it->second;
  }

  // A stored floating input as a fresh leaf requiring grad; its gradient is checked by check().
  Tensor input(const std::string& key) {
    Tensor t = (*this)[key].clone().detach();
    t.set_requires_grad(true);
    inputs_[key] = t;
    return t;
  }

  int64_t meta_int(const std::string& key) const { return std::stoll(metadata_.at(key)); }
  double meta_double(const std::string& key) const { return std::stod(metadata_.at(key)); }

  // Compares `out` with "out", backpropagates "grad_out" and compares each input's gradient with
  // "grad.<input>". Every stored gradient must belong to an input taken through input().
  void check(const Tensor& out) const {
    EXPECT_EQ(out.dtype(), DType::f64);
    EXPECT_TRUE(allclose(out, (*this)["out"], kAtol, kRtol)) << name_ << ": out";
    out.backward((*this)["grad_out"]);
    std::set<std::string> checked;
    for (const auto& [key, leaf] : inputs_) {
      const Tensor g = leaf.grad();
      if (!g.defined()) {
        ADD_FAILURE() << name_ << ": input " << key << " received no gradient";
        continue;
      }
      EXPECT_TRUE(allclose(g, (*this)["grad." + key], kAtol, kRtol)) << name_ << ": grad." << key;
      checked.insert("grad." + key);
    }
    for (const auto& [key, t] : tensors_)
      if (key.rfind("grad.", 0) == 0)
        EXPECT_TRUE(checked.count(key)) << name_ << ": stored " << key << " was never compared";
  }

 private:
  std::string name_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, Tensor> inputs_;
};

// -- ops -----------------------------------------------------------------------------------------

TEST(Parity, MatmulBatchedTransposed) {
  Fixture f("matmul_batched_transposed");
  const Tensor b = f.input("b");
  f.check(matmul(f.input("a"), b.transpose(-2, -1)));
}

TEST(Parity, MatmulBroadcast) {
  Fixture f("matmul_broadcast");
  f.check(matmul(f.input("a"), f.input("b")));
}

TEST(Parity, Softmax) {
  Fixture f("softmax");
  f.check(softmax(f.input("x"), f.meta_int("dim")));
}

TEST(Parity, LogSoftmax) {
  Fixture f("log_softmax");
  f.check(log_softmax(f.input("x"), f.meta_int("dim")));
}

TEST(Parity, LayerNormAffine) {
  Fixture f("layer_norm_affine");
  f.check(layer_norm(f.input("x"), f.input("weight"), f.input("bias"), f.meta_double("eps")));
}

TEST(Parity, LayerNormPlain) {
  Fixture f("layer_norm_plain");
  f.check(layer_norm(f.input("x"), Tensor(), Tensor(), f.meta_double("eps")));
}

TEST(Parity, RmsNorm) {
  Fixture f("rms_norm");
  f.check(rms_norm(f.input("x"), f.input("weight"), f.meta_double("eps")));
}

TEST(Parity, GeluTanh) {
  Fixture f("gelu_tanh");
  f.check(gelu_tanh(f.input("x")));
}

TEST(Parity, Silu) {
  Fixture f("silu");
  f.check(silu(f.input("x")));
}

TEST(Parity, CrossEntropyWithIgnoredTarget) {
  Fixture f("cross_entropy");
  f.check(cross_entropy(f.input("logits"), f["targets"], f.meta_int("ignore_index")));
}

TEST(Parity, MseLoss) {
  Fixture f("mse_loss");
  f.check(mse_loss(f.input("input"), f.input("target")));
}

TEST(Parity, Conv2dStridePaddingBias) {
  Fixture f("conv2d");
  const int64_t s = f.meta_int("stride"), p = f.meta_int("padding");
  f.check(conv2d(f.input("x"), f.input("weight"), f.input("bias"), {s, s}, {p, p}));
}

TEST(Parity, EmbeddingWithRepeatedIndices) {
  Fixture f("embedding");
  f.check(embedding(f["indices"], f.input("table")));
}

TEST(Parity, Attention) {
  Fixture f("attention_plain");
  f.check(scaled_dot_product_attention(f.input("q"), f.input("k"), f.input("v")));
}

TEST(Parity, AttentionWithBoolMask) {
  Fixture f("attention_masked");
  f.check(scaled_dot_product_attention(f.input("q"), f.input("k"), f.input("v"), f["mask"]));
}

void check_topk(const std::string& name) {
  Fixture f(name);
  const TopK r = topk(f.input("x"), f.meta_int("k"), f.meta_int("dim"), f.meta_int("largest") != 0);
  EXPECT_EQ(r.indices.dtype(), DType::i64);
  EXPECT_EQ(r.indices.shape(), f["out_indices"].shape());
  EXPECT_EQ(r.indices.to_vector<int64_t>(), f["out_indices"].to_vector<int64_t>());
  f.check(r.values);
}

TEST(Parity, TopkLargest) {
  check_topk("topk_largest");
}
TEST(Parity, TopkSmallestAlongDim0) {
  check_topk("topk_smallest");
}

// -- modules, written with the functional ops ----------------------------------------------------

TEST(Parity, LinearModule) {
  Fixture f("linear_module");
  f.check(linear(f.input("x"), f.input("weight"), f.input("bias")));
}

TEST(Parity, MlpModule) {
  Fixture f("mlp_module");
  const Tensor h = gelu_tanh(linear(f.input("x"), f.input("fc1.weight"), f.input("fc1.bias")));
  f.check(linear(h, f.input("fc2.weight"), f.input("fc2.bias")));
}

TEST(Parity, SwiGluModule) {
  Fixture f("swiglu_module");
  const Tensor x = f.input("x");
  const Tensor h = silu(linear(x, f.input("gate.weight"))) * linear(x, f.input("up.weight"));
  f.check(linear(h, f.input("down.weight")));
}

TEST(Parity, MultiHeadAttentionModule) {
  Fixture f("mha_module");
  const Tensor x = f.input("x");
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), H = f.meta_int("heads");
  // [B, T, 3D] -> [B, T, 3, H, hd] -> [3, B, H, T, hd]
  const Tensor qkv = linear(x, f.input("qkv.weight"), f.input("qkv.bias"))
                         .reshape({B, T, 3, H, D / H})
                         .permute({2, 0, 3, 1, 4});
  const Tensor o = scaled_dot_product_attention(qkv.select(0, 0), qkv.select(0, 1),
                                                qkv.select(0, 2));  // [B, H, T, hd]
  f.check(
      linear(o.transpose(1, 2).reshape({B, T, D}), f.input("proj.weight"), f.input("proj.bias")));
}

TEST(Parity, LayerNormModule) {
  Fixture f("layer_norm_module");
  f.check(layer_norm(f.input("x"), f.input("weight"), f.input("bias"), f.meta_double("eps")));
}

// The fixtures themselves: the generator's format is read by loom's loader with the dtypes and
// metadata the tests above rely on.
TEST(Parity, FixturesCarryMetadataAndTypedInputs) {
  const SafetensorsFile f = load_safetensors(fixture_path("cross_entropy"));
  EXPECT_EQ(f.metadata.at("case"), "cross_entropy");
  bool saw_targets = false;
  for (const auto& [key, t] : f.tensors) {
    if (key == "targets") {
      saw_targets = true;
      EXPECT_EQ(t.dtype(), DType::i64);
    } else {
      EXPECT_EQ(t.dtype(), DType::f64) << key;
    }
  }
  EXPECT_TRUE(saw_targets);
}

}  // namespace
}  // namespace loom
