// The adaLN kernels of the DiT block (contract and launch shape in adaln.h). Grid: blockIdx.x is
// the batch item, blockIdx.y the tile of tokens; a thread owns packs threadIdx.x + k * blockDim.x
// (k < kRowElems / V) of every row, the same columns for every token of its tile, which is what
// lets it keep the modulation vectors and its share of the sums over tokens in registers.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/adaln.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype_cuda.cuh"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/pack.cuh"
#include "kernels/cuda/runtime.h"

namespace loom::kernels::cuda {

namespace {

constexpr int kRowElems = 16;  // row elements a thread holds in registers
constexpr int kMaxThreads = int(kAdalnMaxCols / kRowElems);
constexpr int kMaxWarps = kMaxThreads / 32;
// Tokens per tile. Kernels without sums over tokens take short tiles: many blocks, so the last
// wave is short, and still few loads of the modulation vectors per row. Kernels with sums take
// tiles of at least kMinSumTile tokens, so the partial sums stay a small part of the traffic
// (~1.6 / tile_tokens of it), and enough of them for about kSumBlocks blocks (~4 waves on an H200).
constexpr int64_t kShortTile = 8;
constexpr int64_t kMinSumTile = 16;
constexpr int64_t kSumBlocks = 4096;

// A thread's elements of one row: [packs][elements per pack], in the compute type.
template <class C, int V>
using Regs = C[kRowElems / V][V];

// The block's work: batch item b, tokens [t0, t1), and the packs of a row this thread owns.
template <int V>
struct Tile {
  static constexpr int kPacks = kRowElems / V;  // packs per thread
  int64_t b, t0, t1, tokens, cols;

  __device__ Tile(int64_t tokens_, int64_t cols_, int64_t tile_tokens)
      : b(blockIdx.x),
        t0(int64_t(blockIdx.y) * tile_tokens),
        t1(min(tokens_, t0 + tile_tokens)),
        tokens(tokens_),
        cols(cols_) {}
  __device__ int64_t pack(int k) const { return threadIdx.x + int64_t(k) * blockDim.x; }
  __device__ bool has(int k) const { return pack(k) * V < cols; }
  __device__ int64_t row(int64_t t) const { return b * tokens + t; }

  // This thread's elements of batch item b's row of `v` [B, C], plus `add`.
  template <class C>
  __device__ void load_vector(const C* v, Regs<C, V>& out, C add = C(0)) const {
    const C* vb = v + b * cols;
#pragma unroll
    for (int k = 0; k < kPacks; ++k)
      if (has(k))
#pragma unroll
        for (int j = 0; j < V; ++j) out[k][j] = vb[pack(k) * V + j] + add;
  }
  // Stores this thread's elements of a [C] vector into part [tiles, B, C] at this block's tile.
  template <class C>
  __device__ void store_partial(C* part, const Regs<C, V>& in) const {
    C* pb = part + (int64_t(blockIdx.y) * gridDim.x + b) * cols;
#pragma unroll
    for (int k = 0; k < kPacks; ++k)
      if (has(k))
#pragma unroll
        for (int j = 0; j < V; ++j) pb[pack(k) * V + j] = in[k][j];
  }
};

// Sums each v[i] over the block; every thread gets the totals. Lanes combine by xor butterfly
// (each step adds the same two values on both lanes, so all lanes agree bitwise), then warps in
// warp order. buf is the block's shared [2][kMaxWarps * K]; calls alternate halves, so a call
// needs one barrier: the half it writes was last read before the previous call's barrier.
template <int K, class C>
__device__ __forceinline__ void block_sum(C (&v)[K], C* buf, int& phase) {
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[i] += __shfl_xor_sync(0xffffffffu, v[i], o);
  const int warps = blockDim.x / 32;
  if (warps == 1) return;
  C* half = buf + phase * kMaxWarps * K;
  phase ^= 1;
  if (threadIdx.x % 32 == 0)
#pragma unroll
    for (int i = 0; i < K; ++i) half[threadIdx.x / 32 * K + i] = v[i];
  __syncthreads();
#pragma unroll
  for (int i = 0; i < K; ++i) {
    C s = half[i];
    for (int w = 1; w < warps; ++w) s += half[w * K + i];
    v[i] = s;
  }
}

template <class TX, class TY, int V, class C = typename Compute<TX>::type>
__global__ void __launch_bounds__(kMaxThreads)
    layer_norm_modulate_forward_kernel(const TX* __restrict__ x, const C* __restrict__ shift,
                                       const C* __restrict__ scale, TY* __restrict__ y,
                                       C* __restrict__ mean, C* __restrict__ rstd, int64_t tokens,
                                       int64_t cols, int64_t tile_tokens, double eps) {
  __shared__ C buf[2 * kMaxWarps];
  int phase = 0;
  const Tile<V> tile(tokens, cols, tile_tokens);
  Regs<C, V> gain, bias, v;
  tile.load_vector(scale, gain, C(1));
  tile.load_vector(shift, bias);
  for (int64_t t = tile.t0; t < tile.t1; ++t) {
    const int64_t r = tile.row(t);
    C s[1] = {0};
#pragma unroll
    for (int k = 0; k < Tile<V>::kPacks; ++k) {
      if (!tile.has(k)) continue;
      load_pack<V>(x + r * cols, tile.pack(k), v[k]);
#pragma unroll
      for (int j = 0; j < V; ++j) s[0] += v[k][j];
    }
    block_sum(s, buf, phase);
    const C mu = s[0] / C(cols);
    C ss[1] = {0};
#pragma unroll
    for (int k = 0; k < Tile<V>::kPacks; ++k)
      if (tile.has(k))
#pragma unroll
        for (int j = 0; j < V; ++j) ss[0] += (v[k][j] - mu) * (v[k][j] - mu);
    block_sum(ss, buf, phase);
    const C rs = C(1) / sqrt(ss[0] / C(cols) + C(eps));
    if (threadIdx.x == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
#pragma unroll
    for (int k = 0; k < Tile<V>::kPacks; ++k) {
      if (!tile.has(k)) continue;
      C out[V];
#pragma unroll
      for (int j = 0; j < V; ++j) out[j] = (v[k][j] - mu) * rs * gain[k][j] + bias[k][j];
      store_pack<V>(y + r * cols, tile.pack(k), out);
    }
  }
}

template <class TX, class TY, int V, class C = typename Compute<TX>::type>
__global__ void __launch_bounds__(kMaxThreads)
    layer_norm_modulate_backward_kernel(const TX* __restrict__ x, const C* __restrict__ scale,
                                        const C* __restrict__ mean, const C* __restrict__ rstd,
                                        const TY* __restrict__ dy, const TX* __restrict__ dres,
                                        TX* __restrict__ dx, C* __restrict__ dshift_part,
                                        C* __restrict__ dscale_part, int64_t tokens, int64_t cols,
                                        int64_t tile_tokens) {
  __shared__ C buf[2 * kMaxWarps * 2];
  int phase = 0;
  const Tile<V> tile(tokens, cols, tile_tokens);
  Regs<C, V> gain, sum_g = {}, sum_gx = {}, xh, g;
  tile.load_vector(scale, gain, C(1));
  for (int64_t t = tile.t0; t < tile.t1; ++t) {
    const int64_t r = tile.row(t);
    const C mu = mean[r], rs = rstd[r];
    C s[2] = {0, 0};  // sums over the row of gz and gz * x_hat
#pragma unroll
    for (int k = 0; k < Tile<V>::kPacks; ++k) {
      if (!tile.has(k)) continue;
      load_pack<V>(x + r * cols, tile.pack(k), xh[k]);
      load_pack<V>(dy + r * cols, tile.pack(k), g[k]);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        xh[k][j] = (xh[k][j] - mu) * rs;
        const C gz = g[k][j] * gain[k][j];
        s[0] += gz;
        s[1] += gz * xh[k][j];
        sum_g[k][j] += g[k][j];
        sum_gx[k][j] += g[k][j] * xh[k][j];
      }
    }
    block_sum(s, buf, phase);
    const C mean_gz = s[0] / C(cols), mean_gzx = s[1] / C(cols);
#pragma unroll
    for (int k = 0; k < Tile<V>::kPacks; ++k) {
      if (!tile.has(k)) continue;
      C out[V] = {};
      if (dres) load_pack<V>(dres + r * cols, tile.pack(k), out);
#pragma unroll
      for (int j = 0; j < V; ++j)
        out[j] += rs * (g[k][j] * gain[k][j] - mean_gz - xh[k][j] * mean_gzx);
      store_pack<V>(dx + r * cols, tile.pack(k), out);
    }
  }
  tile.store_partial(dshift_part, sum_g);
  tile.store_partial(dscale_part, sum_gx);
}

template <class TX, class TY, int V, class C = typename Compute<TX>::type>
__global__ void __launch_bounds__(kMaxThreads)
    gated_residual_forward_kernel(const TX* __restrict__ x, const C* __restrict__ gate,
                                  const TY* __restrict__ y, TX* __restrict__ out, int64_t tokens,
                                  int64_t cols, int64_t tile_tokens) {
  const Tile<V> tile(tokens, cols, tile_tokens);
  Regs<C, V> gt;
  tile.load_vector(gate, gt);
  for (int64_t t = tile.t0; t < tile.t1; ++t) {
    const int64_t r = tile.row(t);
#pragma unroll
    for (int k = 0; k < Tile<V>::kPacks; ++k) {
      if (!tile.has(k)) continue;
      C a[V], b[V];
      load_pack<V>(x + r * cols, tile.pack(k), a);
      load_pack<V>(y + r * cols, tile.pack(k), b);
#pragma unroll
      for (int j = 0; j < V; ++j) a[j] += gt[k][j] * b[j];
      store_pack<V>(out + r * cols, tile.pack(k), a);
    }
  }
}

template <class TX, class TY, int V, class C = typename Compute<TX>::type>
__global__ void __launch_bounds__(kMaxThreads)
    gated_residual_backward_kernel(const C* __restrict__ gate, const TY* __restrict__ y,
                                   const TX* __restrict__ dout, TY* __restrict__ dy,
                                   C* __restrict__ dgate_part, int64_t tokens, int64_t cols,
                                   int64_t tile_tokens) {
  const Tile<V> tile(tokens, cols, tile_tokens);
  Regs<C, V> gt, sum_gy = {};
  tile.load_vector(gate, gt);
  for (int64_t t = tile.t0; t < tile.t1; ++t) {
    const int64_t r = tile.row(t);
#pragma unroll
    for (int k = 0; k < Tile<V>::kPacks; ++k) {
      if (!tile.has(k)) continue;
      C g[V], v[V], out[V];
      load_pack<V>(dout + r * cols, tile.pack(k), g);
      load_pack<V>(y + r * cols, tile.pack(k), v);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        out[j] = g[j] * gt[k][j];
        sum_gy[k][j] += g[j] * v[j];
      }
      store_pack<V>(dy + r * cols, tile.pack(k), out);
    }
  }
  tile.store_partial(dgate_part, sum_gy);
}

// out[i] = sum over tiles k, in order, of part[k * n + i].
template <class C>
__global__ void sum_tiles_kernel(const C* __restrict__ part, C* __restrict__ out, int64_t tiles,
                                 int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) {
    C s = 0;
    for (int64_t k = 0; k < tiles; ++k) s += part[k * n + i];
    out[i] = s;
  }
}

// Threads per block and the tokens of a tile. Only the shape decides them, so the sums over
// tokens add the same partials in the same order on every run and every device.
struct Tiling {
  unsigned threads = 32;
  int64_t tile_tokens = 1, tiles = 1;
};

Tiling tiling(int64_t batch, int64_t tokens, int64_t packs, int packs_per_thread, bool token_sums) {
  Tiling t;
  const int64_t threads = (packs + packs_per_thread - 1) / packs_per_thread;
  t.threads = unsigned(std::max<int64_t>(32, (threads + 31) / 32 * 32));
  if (token_sums) {
    const int64_t want = std::clamp<int64_t>((kSumBlocks + batch - 1) / batch, 1,
                                             (tokens + kMinSumTile - 1) / kMinSumTile);
    t.tile_tokens = (tokens + want - 1) / want;
  } else {
    t.tile_tokens = std::min(tokens, kShortTile);
  }
  t.tiles = (tokens + t.tile_tokens - 1) / t.tile_tokens;
  return t;
}

bool all_aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  return true;
}

// Calls f(TX{}, TY{}) for the supported (x, y) dtype pairs: equal, or f32 x with bf16/f16 y.
template <class F>
void dispatch_pair(DType x, DType y, const char* kernel, F&& f) {
  if (x == y) return dispatch_float(x, kernel, [&](auto t) { f(t, t); });
  if (x == DType::f32 && y == DType::bf16) return f(float{}, __nv_bfloat16{});
  if (x == DType::f32 && y == DType::f16) return f(float{}, __half{});
  unsupported_dtype(kernel, y);
}

// Launches a tile kernel through launch(TX{}, TY{}, V, tiling, stream) with V = 16-byte packs
// when C fills whole packs and every row operand in `rows` is 16-byte aligned, V = 1 otherwise.
// Needs tokens > 0.
template <class F>
void launch_tiles(const char* kernel, DType x_dtype, DType y_dtype,
                  std::initializer_list<const void*> rows, int64_t batch, int64_t tokens,
                  int64_t cols, bool token_sums, F&& launch) {
  if (cols > kAdalnMaxCols)
    throw std::runtime_error(std::string("[cuda] ") + kernel + ": rows of " + std::to_string(cols) +
                             " elements exceed kAdalnMaxCols (" + std::to_string(kAdalnMaxCols) +
                             ")");
  dispatch_pair(x_dtype, y_dtype, kernel, [&](auto tx, auto ty) {
    constexpr int kPack = 16 / int(std::max(sizeof(tx), sizeof(ty)));
    const auto go = [&](auto v) {
      constexpr int kV = decltype(v)::value;
      launch(tx, ty, v, tiling(batch, tokens, cols / kV, kRowElems / kV, token_sums),
             compute_stream());
    };
    if (cols % kPack == 0 && all_aligned16(rows)) {
      go(std::integral_constant<int, kPack>{});
    } else {
      go(std::integral_constant<int, 1>{});
    }
  });
  check_launch(kernel);
}

// The sums over tokens of `outs` ([B, C] each, compute type C): a single tile writes them
// directly; otherwise the kernel writes partials [tiles, B, C] per output into scratch and
// finish() adds them in tile order.
template <class C>
class TokenSums {
 public:
  TokenSums(int64_t tiles, int64_t n, std::initializer_list<void*> outs) : tiles_(tiles), n_(n) {
    for (void* p : outs) outs_[count_++] = static_cast<C*>(p);
    if (tiles_ > 1)
      scratch_ = static_cast<C*>(
          device_malloc(size_t(count_ * tiles_ * n_) * sizeof(C), current_device()));
  }
  C* part(int i) const { return tiles_ == 1 ? outs_[i] : scratch_ + i * tiles_ * n_; }
  // Adds the partials; the scratch returns to the cache at once, which is safe because later
  // work is ordered after these kernels on the stream.
  void finish(cudaStream_t stream) const {
    if (tiles_ == 1) return;
    for (int i = 0; i < count_; ++i)
      sum_tiles_kernel<C><<<blocks_for(n_, 256), 256, 0, stream>>>(part(i), outs_[i], tiles_, n_);
    device_free(scratch_, current_device());
  }

 private:
  int64_t tiles_, n_;
  C* outs_[2] = {};
  int count_ = 0;
  C* scratch_ = nullptr;
};

DType compute_dtype(DType x) {
  return x == DType::f64 ? DType::f64 : DType::f32;
}

}  // namespace

void layer_norm_modulate_forward(const void* x, const void* shift, const void* scale, void* y,
                                 void* mean, void* rstd, DType x_dtype, DType y_dtype,
                                 int64_t batch, int64_t tokens, int64_t cols, double eps) {
  if (batch == 0 || tokens == 0 || cols == 0) return;
  launch_tiles("layer_norm_modulate_forward", x_dtype, y_dtype, {x, y}, batch, tokens, cols, false,
               [&](auto tx, auto ty, auto v, const Tiling& t, cudaStream_t s) {
                 using TX = decltype(tx);
                 using C = typename Compute<TX>::type;
                 layer_norm_modulate_forward_kernel<TX, decltype(ty), decltype(v)::value>
                     <<<dim3(unsigned(batch), unsigned(t.tiles)), t.threads, 0, s>>>(
                         static_cast<const TX*>(x), static_cast<const C*>(shift),
                         static_cast<const C*>(scale), static_cast<decltype(ty)*>(y),
                         static_cast<C*>(mean), static_cast<C*>(rstd), tokens, cols, t.tile_tokens,
                         eps);
               });
}

void layer_norm_modulate_backward(const void* x, const void* scale, const void* mean,
                                  const void* rstd, const void* dy, const void* dres, void* dx,
                                  void* dshift, void* dscale, DType x_dtype, DType y_dtype,
                                  int64_t batch, int64_t tokens, int64_t cols) {
  if (batch == 0 || cols == 0) return;
  if (tokens == 0) {
    fill(dshift, compute_dtype(x_dtype), batch * cols, 0);
    fill(dscale, compute_dtype(x_dtype), batch * cols, 0);
    return;
  }
  launch_tiles("layer_norm_modulate_backward", x_dtype, y_dtype, {x, dy, dres, dx}, batch, tokens,
               cols, true, [&](auto tx, auto ty, auto v, const Tiling& t, cudaStream_t s) {
                 using TX = decltype(tx);
                 using TY = decltype(ty);
                 using C = typename Compute<TX>::type;
                 const TokenSums<C> sums(t.tiles, batch * cols, {dshift, dscale});
                 layer_norm_modulate_backward_kernel<TX, TY, decltype(v)::value>
                     <<<dim3(unsigned(batch), unsigned(t.tiles)), t.threads, 0, s>>>(
                         static_cast<const TX*>(x), static_cast<const C*>(scale),
                         static_cast<const C*>(mean), static_cast<const C*>(rstd),
                         static_cast<const TY*>(dy), static_cast<const TX*>(dres),
                         static_cast<TX*>(dx), sums.part(0), sums.part(1), tokens, cols,
                         t.tile_tokens);
                 sums.finish(s);
               });
}

void gated_residual_forward(const void* x, const void* gate, const void* y, void* out,
                            DType x_dtype, DType y_dtype, int64_t batch, int64_t tokens,
                            int64_t cols) {
  if (batch == 0 || tokens == 0 || cols == 0) return;
  launch_tiles("gated_residual_forward", x_dtype, y_dtype, {x, y, out}, batch, tokens, cols, false,
               [&](auto tx, auto ty, auto v, const Tiling& t, cudaStream_t s) {
                 using TX = decltype(tx);
                 using TY = decltype(ty);
                 using C = typename Compute<TX>::type;
                 gated_residual_forward_kernel<TX, TY, decltype(v)::value>
                     <<<dim3(unsigned(batch), unsigned(t.tiles)), t.threads, 0, s>>>(
                         static_cast<const TX*>(x), static_cast<const C*>(gate),
                         static_cast<const TY*>(y), static_cast<TX*>(out), tokens, cols,
                         t.tile_tokens);
               });
}

void gated_residual_backward(const void* gate, const void* y, const void* dout, void* dy,
                             void* dgate, DType x_dtype, DType y_dtype, int64_t batch,
                             int64_t tokens, int64_t cols) {
  if (batch == 0 || cols == 0) return;
  if (tokens == 0) {
    fill(dgate, compute_dtype(x_dtype), batch * cols, 0);
    return;
  }
  launch_tiles("gated_residual_backward", x_dtype, y_dtype, {y, dout, dy}, batch, tokens, cols,
               true, [&](auto tx, auto ty, auto v, const Tiling& t, cudaStream_t s) {
                 using TX = decltype(tx);
                 using TY = decltype(ty);
                 using C = typename Compute<TX>::type;
                 const TokenSums<C> sums(t.tiles, batch * cols, {dgate});
                 gated_residual_backward_kernel<TX, TY, decltype(v)::value>
                     <<<dim3(unsigned(batch), unsigned(t.tiles)), t.threads, 0, s>>>(
                         static_cast<const C*>(gate), static_cast<const TY*>(y),
                         static_cast<const TX*>(dout), static_cast<TY*>(dy), sums.part(0), tokens,
                         cols, t.tile_tokens);
                 sums.finish(s);
               });
}

}  // namespace loom::kernels::cuda
