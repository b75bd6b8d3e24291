#include "core/ops/flash_attention.h"

#include <array>

#include "core/autograd.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_cudnn.h"

namespace loom::ops {

namespace {

namespace kc = kernels::cuda;

kc::AttentionStrides strides_of(const Tensor& t) {
  return {t.strides()[0], t.strides()[1], t.strides()[2]};
}

// A [B, H, T, D] tensor laid out as [B, T, H, D] memory.
Tensor empty_bthd(int64_t b, int64_t h, int64_t t, int64_t d, DType dtype, Device device) {
  return empty({b, t, h, d}, dtype, device).transpose(1, 2);
}

// D contiguous, as the kernels address it.
Tensor unit_last(const Tensor& t) {
  return t.strides().back() == 1 ? t : t.contiguous();
}

// q, k, v are slices of one packed [B, T, 3, H, D] projection (the usual qkv linear, viewed and
// unbound): same storage and strides, k and v H * D elements after q and k.
bool packed_qkv(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t T = q.size(2), H = q.size(1), D = q.size(3);
  const Strides packed = {T * 3 * H * D, D, 3 * H * D, 1};
  return k.storage() == q.storage() && v.storage() == q.storage() && q.strides() == packed &&
         k.strides() == packed && v.strides() == packed && k.shape() == q.shape() &&
         v.shape() == q.shape() && k.offset() == q.offset() + H * D &&
         v.offset() == k.offset() + H * D;
}

// dq, dk, dv [B, H, T, D] in [B, T, H, D] memory — or, for packed q, k, v, slices of one packed
// buffer laid out like theirs, which the backward of the unbind that made them takes whole
// instead of copying three gradients into one.
std::array<Tensor, 3> gradient_buffers(const Tensor& q, const Tensor& k, const Tensor& v) {
  if (packed_qkv(q, k, v)) {
    const Tensor packed =
        empty({q.size(0), q.size(2), 3, q.size(1), q.size(3)}, q.dtype(), q.device());
    return {packed.select(2, 0).transpose(1, 2), packed.select(2, 1).transpose(1, 2),
            packed.select(2, 2).transpose(1, 2)};
  }
  return {empty_bthd(q.size(0), q.size(1), q.size(2), q.size(3), q.dtype(), q.device()),
          empty_bthd(k.size(0), k.size(1), k.size(2), k.size(3), k.dtype(), k.device()),
          empty_bthd(v.size(0), v.size(1), v.size(2), v.size(3), v.dtype(), v.device())};
}

class FlashAttentionOp final : public Op {
 public:
  explicit FlashAttentionOp(double scale) : scale_(scale) {}
  const char* name() const override { return "flash_attention"; }
  bool saves_outputs() const override { return true; }
  bool output_differentiable(int index, DType) const override { return index == 0; }

  std::vector<Tensor> forward(const std::vector<Tensor>& in) override {
    const Tensor &q = in[0], &k = in[1], &v = in[2];
    kc::AttentionArgs a = args(q, k);
    Tensor o = empty_bthd(q.size(0), q.size(1), q.size(2), v.size(3), q.dtype(), q.device());
    Tensor lse = empty({q.size(0), q.size(1), q.size(2)}, DType::f32, q.device());
    a.q = strides_of(q);
    a.k = strides_of(k);
    a.v = strides_of(v);
    a.o = strides_of(o);
    if (!kc::cudnn_attention_forward(a, q.raw_data(), k.raw_data(), v.raw_data(), o.raw_data(),
                                     lse.data<float>(), q.dtype()))
      kc::flash_attention_forward(a, q.raw_data(), k.raw_data(), v.raw_data(), o.raw_data(),
                                  lse.data<float>(), q.dtype());
    return {o, lse};
  }

  std::vector<Tensor> backward(const SavedContext& ctx, const std::vector<Tensor>& g) override {
    const Tensor &q = ctx.inputs[0], &k = ctx.inputs[1], &v = ctx.inputs[2];
    const Tensor &o = ctx.outputs[0], &lse = ctx.outputs[1];
    const Tensor dout = unit_last(g[0].to(q.dtype()));
    kc::AttentionArgs a = args(q, k);
    auto [dq, dk, dv] = gradient_buffers(q, k, v);
    a.q = strides_of(q);
    a.k = strides_of(k);
    a.v = strides_of(v);
    a.o = strides_of(o);
    a.dout = strides_of(dout);
    a.dq = strides_of(dq);
    a.dk = strides_of(dk);
    a.dv = strides_of(dv);
    if (kc::cudnn_attention_backward(a, q.raw_data(), k.raw_data(), v.raw_data(), o.raw_data(),
                                     dout.raw_data(), lse.data<float>(), dq.raw_data(),
                                     dk.raw_data(), dv.raw_data(), q.dtype()))
      return {dq, dk, dv};
    const size_t ws_bytes = kc::flash_attention_backward_workspace_bytes(a);
    Tensor ws = empty({int64_t((ws_bytes + 3) / 4)}, DType::f32, q.device());
    kc::flash_attention_backward(a, q.raw_data(), k.raw_data(), v.raw_data(), o.raw_data(),
                                 dout.raw_data(), lse.data<float>(), dq.raw_data(), dk.raw_data(),
                                 dv.raw_data(), q.dtype(), ws_bytes ? ws.data<float>() : nullptr);
    return {dq, dk, dv};
  }

 private:
  kc::AttentionArgs args(const Tensor& q, const Tensor& k) const {
    kc::AttentionArgs a;
    a.batch = q.size(0);
    a.heads = q.size(1);
    a.q_len = q.size(2);
    a.kv_len = k.size(2);
    a.head_dim = q.size(3);
    a.scale = float(scale_);
    return a;
  }

  double scale_;
};

}  // namespace

bool flash_attention_applies(const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& mask) {
  if (mask.defined() || !q.device().is_cuda()) return false;
  if (q.dtype() != DType::bf16 && q.dtype() != DType::f16) return false;
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype()) return false;
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  return q.size(0) == k.size(0) && q.size(0) == v.size(0) && q.size(1) == k.size(1) &&
         q.size(1) == v.size(1) && v.size(3) == q.size(3) && q.size(3) <= 256;
}

Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  return apply<FlashAttentionOp>({unit_last(q), unit_last(k), unit_last(v)}, scale)[0];
}

}  // namespace loom::ops
