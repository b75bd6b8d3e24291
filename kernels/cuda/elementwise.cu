// CUDA elementwise kernels of kernels.h: unary, binary, where, clamp, copy, fill.
//
// Launch shape: one thread per element in a grid-stride loop, 256 threads per block. Unary and
// clamp run over contiguous data of one dtype (core makes inputs contiguous); unary takes the
// vectorized map of vectorized.cuh. Binary, where and copy first collapse the iteration space to
// the fewest dims (strided.cuh), so a contiguous or row-broadcast operand costs one or two index
// divisions per element. Binary then takes a typed kernel when every tensor operand has one
// storage type (host scalars adapt) — the vectorized map when every operand is contiguous — and
// otherwise a general one that loads each operand by its runtime dtype (mixed dtypes). Copy of
// contiguous data is a device memcpy (same dtype) or a vectorized conversion (floating dtypes).
// The compute type is double when any operand is f64 or an integer or bool (exact below 2^53),
// float otherwise (bf16/f16 are loaded as float).

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/strided.cuh"
#include "kernels/cuda/vectorized.cuh"

namespace loom::kernels::cuda {

namespace {

constexpr int kThreads = 256;


// Scalar functions of kernels/scalar_fns.h as functors over the compute type, for vectorized.cuh.
template <class F>
struct Apply1 {
  template <class C>
  __device__ C operator()(C x) const {
    return C(F::f(x));
  }
};
template <class F>
struct Apply2 {
  template <class C>
  __device__ C operator()(C x, C y) const {
    return C(F::f(x, y));
  }
};
struct Identity {
  template <class C>
  __device__ C operator()(C x) const {
    return x;
  }
};

// Whether every tensor operand of a collapsed iteration space steps through memory with stride 1.
bool all_contiguous(const IterShape& shape, std::initializer_list<const Operand*> ops) {
  if (shape.ndim > 1) return false;
  for (const Operand* o : ops)
    if (shape.ndim == 1 && o->data && o->strides[0] != 1) return false;
  return true;
}

bool is_float16_or_32(DType t) {
  return t == DType::f32 || t == DType::bf16 || t == DType::f16;
}

template <class T>
__global__ void clamp_kernel(const T* x, T* y, int64_t n, double lo, double hi) {
  using C = typename Compute<T>::type;
  for (int64_t i = grid_index(); i < n; i += grid_step()) {
    C v = to_compute<C>(x[i]);
    // NaN stays NaN, as std::clamp-free CPU twin (min(max(x, lo), hi)) does.
    if (v < C(lo)) v = C(lo);
    if (v > C(hi)) v = C(hi);
    y[i] = from_compute<T>(v);
  }
}

// Every tensor operand has storage type T (a host scalar stands in for a null pointer); offsets
// over the collapsed shape.
template <class T, class O, class F>
__global__ void binary_typed_kernel(StridePack<3> p, const T* a, const T* b, O* out,
                                    typename Compute<T>::type sa, typename Compute<T>::type sb,
                                    int64_t n) {
  using C = typename Compute<T>::type;
  for (int64_t i = grid_index(); i < n; i += grid_step()) {
    int64_t off[3];
    strided_offsets(p, i, off);
    const C x = a ? to_compute<C>(a[off[0]]) : sa;
    const C y = b ? to_compute<C>(b[off[1]]) : sb;
    out[off[2]] = from_compute<O>(F::f(x, y));
  }
}

// A runtime-typed operand (or host scalar when data is null).
struct DevOperand {
  const void* data;
  DType dtype;
  double scalar;
};
template <class C>
__device__ __forceinline__ C load_operand(const DevOperand& o, int64_t off) {
  return o.data ? load_as<C>(o.data, o.dtype, off) : C(o.scalar);
}
DevOperand dev(const Operand& o) {
  return {o.data, o.dtype, o.scalar};
}

template <class C, class F>
__global__ void binary_strided_kernel(StridePack<3> p, DevOperand a, DevOperand b, void* out,
                                      DType out_dtype, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) {
    int64_t off[3];
    strided_offsets(p, i, off);
    const C r = C(F::f(load_operand<C>(a, off[0]), load_operand<C>(b, off[1])));
    store_as<C>(out, out_dtype, off[2], r);
  }
}

template <class C>
__global__ void where_kernel(StridePack<4> p, DevOperand cond, DevOperand a, DevOperand b,
                             void* out, DType out_dtype, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) {
    int64_t off[4];
    strided_offsets(p, i, off);
    const bool c = load_operand<int64_t>(cond, off[0]) != 0;
    const C r = c ? load_operand<C>(a, off[1]) : load_operand<C>(b, off[2]);
    store_as<C>(out, out_dtype, off[3], r);
  }
}

// Same-dtype strided copy of raw elements of W bytes.
template <class W>
__global__ void copy_raw_kernel(StridePack<2> p, const W* src, W* dst, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) {
    int64_t off[2];
    strided_offsets(p, i, off);
    dst[off[1]] = src[off[0]];
  }
}

__global__ void copy_convert_kernel(StridePack<2> p, DevOperand src, void* dst, DType dst_dtype,
                                    int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) {
    int64_t off[2];
    strided_offsets(p, i, off);
    if (src.dtype == DType::i64 && dst_dtype == DType::i64) {  // exact beyond 2^53
      static_cast<int64_t*>(dst)[off[1]] = static_cast<const int64_t*>(src.data)[off[0]];
    } else {
      store_as<double>(dst, dst_dtype, off[1], load_operand<double>(src, off[0]));
    }
  }
}

template <class T>
__global__ void fill_kernel(T* dst, int64_t n, T value) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) { dst[i] = value; }
}

bool is_int_like(DType t) {
  return t == DType::i32 || t == DType::i64 || t == DType::boolean;
}

// Calls f(C{}) with the compute type for operands of these dtypes (host scalars count as float).
template <class F>
void dispatch_compute(std::initializer_list<const Operand*> ops, F&& f) {
  bool wide = false;
  for (const Operand* o : ops)
    if (o->data) wide |= o->dtype == DType::f64 || is_int_like(o->dtype);
  if (wide) {
    f(double{});
  } else {
    f(float{});
  }
}

}  // namespace

template <class F>
void unary(const void* x, void* y, DType dtype, int64_t n) {
  if (n == 0) return;
  dispatch_arith(dtype, "unary", [&](auto tag) {
    using T = decltype(tag);
    map1<typename Compute<T>::type>(static_cast<const T*>(x), static_cast<T*>(y), n, Apply1<F>{},
                                    compute_stream());
  });
  check_launch("unary");
}

template <class F>
void binary(const IterShape& shape_in, const Operand& a_in, const Operand& b_in,
            const Operand& out_in) {
  const int64_t n = shape_in.numel();
  if (n == 0) return;
  IterShape shape = shape_in;
  Operand a = a_in, b = b_in, out = out_in;
  Operand* const ops[3] = {&a, &b, &out};
  collapse_dims(shape, ops, 3);
  const StridePack<3> p = pack_strides(shape, {&a, &b, &out});
  // One storage type for every tensor operand (a host scalar adapts): the typed kernel.
  const DType t = a.data ? a.dtype : b.dtype;
  const bool typed = t != DType::boolean && (!a.data || a.dtype == t) && (!b.data || b.dtype == t) &&
                     (out.dtype == t || out.dtype == DType::boolean);
  if (typed) {
    dispatch_arith(t, "binary", [&](auto tag) {
      using T = decltype(tag);
      using C = typename Compute<T>::type;
      const bool contiguous = all_contiguous(shape, {&a, &b, &out});
      auto launch = [&](auto out_tag) {
        using O = decltype(out_tag);
        if (contiguous) {
          map2<C>(static_cast<const T*>(a.data), static_cast<const T*>(b.data), C(a.scalar),
                  C(b.scalar), static_cast<O*>(out.data), n, Apply2<F>{}, compute_stream());
          return;
        }
        binary_typed_kernel<T, O, F><<<blocks_for(n, kThreads), kThreads, 0, compute_stream()>>>(
            p, static_cast<const T*>(a.data), static_cast<const T*>(b.data),
            static_cast<O*>(out.data), C(a.scalar), C(b.scalar), n);
      };
      if (out.dtype == DType::boolean) {
        launch(bool{});
      } else {
        launch(T{});
      }
    });
  } else {
    dispatch_compute({&a, &b}, [&](auto tag) {
      using C = decltype(tag);
      binary_strided_kernel<C, F><<<blocks_for(n, kThreads), kThreads, 0, compute_stream()>>>(
          p, dev(a), dev(b), out.data, out.dtype, n);
    });
  }
  check_launch("binary");
}

void where(const IterShape& shape, const Operand& cond, const Operand& a, const Operand& b,
           const Operand& out) {
  const int64_t n = shape.numel();
  if (n == 0) return;
  IterShape cs = shape;
  Operand c4[4] = {cond, a, b, out};
  Operand* const all[4] = {&c4[0], &c4[1], &c4[2], &c4[3]};
  collapse_dims(cs, all, 4);
  const StridePack<4> p = pack_strides(cs, {&c4[0], &c4[1], &c4[2], &c4[3]});
  dispatch_compute({&a, &b}, [&](auto tag) {
    using C = decltype(tag);
    where_kernel<C><<<blocks_for(n, kThreads), kThreads, 0, compute_stream()>>>(
        p, dev(cond), dev(a), dev(b), out.data, out.dtype, n);
  });
  check_launch("where");
}

void clamp(const void* x, void* y, DType dtype, int64_t n, double lo, double hi) {
  if (n == 0) return;
  dispatch_arith(dtype, "clamp", [&](auto tag) {
    using T = decltype(tag);
    clamp_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, compute_stream()>>>(
        static_cast<const T*>(x), static_cast<T*>(y), n, lo, hi);
  });
  check_launch("clamp");
}

void copy(const IterShape& shape, const Operand& src, const Operand& dst) {
  const int64_t n = shape.numel();
  if (n == 0) return;
  IterShape cs = shape;
  Operand c2[2] = {src, dst};
  Operand* const all[2] = {&c2[0], &c2[1]};
  collapse_dims(cs, all, 2);
  const StridePack<2> p = pack_strides(cs, {&c2[0], &c2[1]});
  const unsigned blocks = blocks_for(n, kThreads);
  const bool contiguous = all_contiguous(cs, {&c2[0], &c2[1]});
  if (contiguous && src.dtype == dst.dtype) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, size_t(n) * dtype_bytes(src.dtype),
                                    cudaMemcpyDeviceToDevice, compute_stream()));
  } else if (contiguous && is_float16_or_32(src.dtype) && is_float16_or_32(dst.dtype)) {
    dispatch_float(src.dtype, "copy", [&](auto in_tag) {
      dispatch_float(dst.dtype, "copy", [&](auto out_tag) {
        map1<float>(static_cast<const decltype(in_tag)*>(src.data),
                    static_cast<decltype(out_tag)*>(dst.data), n, Identity{}, compute_stream());
      });
    });
  } else if (src.dtype == dst.dtype) {
    switch (dtype_bytes(src.dtype)) {
      case 1:
        copy_raw_kernel<uint8_t><<<blocks, kThreads, 0, compute_stream()>>>(
            p, static_cast<const uint8_t*>(src.data), static_cast<uint8_t*>(dst.data), n);
        break;
      case 2:
        copy_raw_kernel<uint16_t><<<blocks, kThreads, 0, compute_stream()>>>(
            p, static_cast<const uint16_t*>(src.data), static_cast<uint16_t*>(dst.data), n);
        break;
      case 4:
        copy_raw_kernel<uint32_t><<<blocks, kThreads, 0, compute_stream()>>>(
            p, static_cast<const uint32_t*>(src.data), static_cast<uint32_t*>(dst.data), n);
        break;
      default:
        copy_raw_kernel<uint64_t><<<blocks, kThreads, 0, compute_stream()>>>(
            p, static_cast<const uint64_t*>(src.data), static_cast<uint64_t*>(dst.data), n);
    }
  } else {
    copy_convert_kernel<<<blocks, kThreads, 0, compute_stream()>>>(p, dev(src), dst.data,
                                                                  dst.dtype, n);
  }
  check_launch("copy");
}

void fill(void* dst, DType dtype, int64_t n, double value) {
  if (n == 0) return;
  const unsigned blocks = blocks_for(n, kThreads);
  cudaStream_t s = compute_stream();
  switch (dtype) {
    case DType::f32: fill_kernel<float><<<blocks, kThreads, 0, s>>>(static_cast<float*>(dst), n, float(value)); break;
    case DType::f64: fill_kernel<double><<<blocks, kThreads, 0, s>>>(static_cast<double*>(dst), n, value); break;
    case DType::bf16: fill_kernel<__nv_bfloat16><<<blocks, kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(dst), n, __float2bfloat16(float(value))); break;
    case DType::f16: fill_kernel<__half><<<blocks, kThreads, 0, s>>>(static_cast<__half*>(dst), n, __float2half(float(value))); break;
    case DType::i32: fill_kernel<int32_t><<<blocks, kThreads, 0, s>>>(static_cast<int32_t*>(dst), n, int32_t(value)); break;
    case DType::i64: fill_kernel<int64_t><<<blocks, kThreads, 0, s>>>(static_cast<int64_t*>(dst), n, int64_t(value)); break;
    case DType::boolean: fill_kernel<bool><<<blocks, kThreads, 0, s>>>(static_cast<bool*>(dst), n, value != 0); break;
  }
  check_launch("fill");
}

#define LOOM_INSTANTIATE_UNARY(F) template void unary<fn::F>(const void*, void*, DType, int64_t);
LOOM_UNARY_FNS(LOOM_INSTANTIATE_UNARY)
#define LOOM_INSTANTIATE_BINARY(F)                                                   \
  template void binary<fn::F>(const IterShape&, const Operand&, const Operand&, \
                              const Operand&);
LOOM_BINARY_FNS(LOOM_INSTANTIATE_BINARY)

}  // namespace loom::kernels::cuda
