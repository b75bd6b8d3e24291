#pragma once
// Host emulation of the warp-level primitives the flash attention kernels use (cp.async,
// ldmatrix, mma.sync m16n8k16, shuffles, barriers), so kernels/cuda/attention_{fwd,bwd}.cu
// compile with g++ and run on the CPU: a check of their indexing without a GPU. Force-included
// (-include) with -DLOOM_ATTENTION_EMULATE; the build line is in attention_emu.cpp.
//
// Each CUDA thread of a block is a ucontext fiber, run round-robin until it waits at a barrier.
// Warp collectives exchange values through per-warp slots (double-buffered: one barrier each).
// cp.async copies are deferred to the wait_group that covers them, so a read that skips its wait
// sees stale data; shared memory starts as 0xff bytes (NaN in every float type). Shared
// addresses, alignments and global reads (against buffers given to emu::register_buffer) are
// checked; a violation or a deadlock aborts with a message.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <ucontext.h>
#include <vector_types.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

namespace emu {

struct Copy {
  unsigned char* dst;
  const unsigned char* src;
  bool valid;
};
struct Fiber {
  ucontext_t ctx;
  std::vector<std::vector<Copy>> groups;  // committed groups, oldest first, then the open one
  bool done = false;
};
struct Block {
  uint3 block_idx, grid_dim, block_dim;
  std::vector<unsigned char> smem;
  int nthreads = 0;
  std::vector<Fiber> fibers;
  int bar_arrived = 0;
  unsigned bar_gen = 0;
  std::vector<int> w_arrived;
  std::vector<unsigned> w_gen;
  std::vector<uint32_t> slots;  // [2][warps * 32][8]
};

inline Block* g_block = nullptr;
inline int g_cur = 0;
inline ucontext_t g_sched;
inline bool g_progress = false;
inline std::function<void()> g_body;
inline std::vector<std::unique_ptr<unsigned char[]>> g_stacks;
constexpr size_t kStack = 256 * 1024;
struct Range {
  const unsigned char* lo;
  size_t n;
};
inline std::vector<Range> g_buffers;
inline std::vector<std::string> g_launch_log;

[[noreturn]] inline void die(const std::string& msg) {
  std::fprintf(stderr, "emu: %s (block %u,%u,%u thread %d)\n", msg.c_str(),
               g_block ? g_block->block_idx.x : 0, g_block ? g_block->block_idx.y : 0,
               g_block ? g_block->block_idx.z : 0, g_cur);
  std::abort();
}
inline void register_buffer(const void* p, size_t n) {
  g_buffers.push_back({static_cast<const unsigned char*>(p), n});
}
inline void check_global(const void* p, size_t n) {
  auto c = static_cast<const unsigned char*>(p);
  for (const Range& r : g_buffers)
    if (c >= r.lo && c + n <= r.lo + r.n) return;
  die("global read outside every registered buffer");
}
inline void check_smem(uint32_t addr, size_t n, size_t align) {
  if (addr % align != 0) die("misaligned shared address " + std::to_string(addr));
  if (addr + n > g_block->smem.size()) die("shared address out of range " + std::to_string(addr));
}

inline Fiber& self() {
  return g_block->fibers[g_cur];
}
inline void yield() {
  swapcontext(&self().ctx, &g_sched);
}
inline void syncthreads() {
  Block& B = *g_block;
  g_progress = true;
  const unsigned gen = B.bar_gen;
  if (++B.bar_arrived == B.nthreads) {
    B.bar_arrived = 0;
    ++B.bar_gen;
  } else {
    while (B.bar_gen == gen) yield();
  }
}
inline int lane() {
  return g_cur % 32;
}
inline int warp() {
  return g_cur / 32;
}
inline uint32_t* slot(unsigned gen, int w, int l) {
  const int warps = g_block->nthreads / 32;
  return &g_block->slots[(size_t((gen % 2) * warps + w) * 32 + l) * 8];
}
// Deposits n words in this lane's slot, waits for the whole warp, returns lane 0's slot of the
// same buffer (lane l's words at [l * 8]). The next collective uses the other buffer, and every
// lane reads this one before it deposits there, so one barrier per collective suffices.
inline const uint32_t* exchange(const uint32_t* in, int n) {
  Block& B = *g_block;
  const int w = warp();
  const unsigned gen = B.w_gen[w];
  uint32_t* mine = slot(gen, w, lane());
  for (int i = 0; i < n; ++i) mine[i] = in[i];
  g_progress = true;
  if (++B.w_arrived[w] == 32) {
    B.w_arrived[w] = 0;
    ++B.w_gen[w];
  } else {
    while (B.w_gen[w] == gen) yield();
  }
  return slot(gen, w, 0);
}
inline void syncwarp() {
  const uint32_t z = 0;
  exchange(&z, 1);
}
inline uint3 thread_idx() {
  return make_uint3(unsigned(g_cur), 0, 0);
}

inline void fiber_entry() {
  g_body();
  self().done = true;
  g_progress = true;
}

inline void run_block(uint3 bidx, uint3 gdim, uint3 bdim, size_t smem_bytes,
                      const std::function<void()>& body) {
  Block B;
  B.block_idx = bidx;
  B.grid_dim = gdim;
  B.block_dim = bdim;
  B.nthreads = int(bdim.x);
  if (B.nthreads % 32 != 0 || B.nthreads > 1024) die("block size must be a multiple of 32");
  B.smem.assign(smem_bytes, 0xff);
  B.fibers.resize(B.nthreads);
  B.w_arrived.assign(B.nthreads / 32, 0);
  B.w_gen.assign(B.nthreads / 32, 0);
  B.slots.assign(size_t(2) * B.nthreads * 8, 0);
  while (int(g_stacks.size()) < B.nthreads) g_stacks.emplace_back(new unsigned char[kStack]);
  g_block = &B;
  g_body = body;
  for (int i = 0; i < B.nthreads; ++i) {
    Fiber& f = B.fibers[i];
    f.groups.assign(1, {});
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = g_stacks[i].get();
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = &g_sched;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  int live = B.nthreads;
  while (live > 0) {
    g_progress = false;
    for (int i = 0; i < B.nthreads; ++i) {
      if (B.fibers[i].done) continue;
      g_cur = i;
      swapcontext(&g_sched, &B.fibers[i].ctx);
      if (B.fibers[i].done) --live;
    }
    if (live > 0 && !g_progress) die("deadlock: threads wait at a barrier others never reach");
  }
  g_block = nullptr;
}

}  // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::g_block->block_idx)
#define gridDim (::emu::g_block->grid_dim)
#define blockDim (::emu::g_block->block_dim)
#define __syncthreads() ::emu::syncthreads()
#define __syncwarp() ::emu::syncwarp()

namespace loom::kernels::cuda::attn {

inline unsigned char* dynamic_smem() {
  return emu::g_block->smem.data();
}
inline uint32_t smem_u32(const void* p) {
  auto c = static_cast<const unsigned char*>(p);
  const unsigned char* base = emu::g_block->smem.data();
  if (c < base || c > base + emu::g_block->smem.size())
    emu::die("smem_u32 of a non-shared pointer");
  return uint32_t(c - base);
}
inline void cp_async16(uint32_t dst, const void* src, bool valid) {
  emu::check_smem(dst, 16, 16);
  if (valid) {
    if (reinterpret_cast<uintptr_t>(src) % 16 != 0) emu::die("misaligned cp.async source");
    emu::check_global(src, 16);
  }
  emu::self().groups.back().push_back(
      {emu::g_block->smem.data() + dst, static_cast<const unsigned char*>(src), valid});
}
inline void cp_async_commit() {
  emu::self().groups.emplace_back();
}
template <int N>
inline void cp_async_wait() {
  auto& gs = emu::self().groups;
  while (int(gs.size()) - 1 > N) {  // committed groups beyond the newest N: complete the oldest
    for (const emu::Copy& c : gs.front()) {
      if (c.valid)
        std::memcpy(c.dst, c.src, 16);
      else
        std::memset(c.dst, 0, 16);
    }
    gs.erase(gs.begin());
  }
}

inline void ldsm(uint32_t* r, int nmat, bool trans, uint32_t addr) {
  const uint32_t* s = emu::exchange(&addr, 1);
  const int L = emu::lane(), g = L / 4, t = L % 4;
  const unsigned char* base = emu::g_block->smem.data();
  for (int i = 0; i < nmat; ++i) {
    if (!trans) {
      const uint32_t a = s[(8 * i + g) * 8];
      emu::check_smem(a, 16, 16);
      std::memcpy(&r[i], base + a + 4 * t, 4);
    } else {
      const uint32_t a0 = s[(8 * i + 2 * t) * 8], a1 = s[(8 * i + 2 * t + 1) * 8];
      emu::check_smem(a0, 16, 16);
      emu::check_smem(a1, 16, 16);
      uint16_t lo, hi;
      std::memcpy(&lo, base + a0 + 2 * g, 2);
      std::memcpy(&hi, base + a1 + 2 * g, 2);
      r[i] = uint32_t(lo) | uint32_t(hi) << 16;
    }
  }
}
inline void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  ldsm(r, 4, false, addr);
}
inline void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  ldsm(r, 4, true, addr);
}
inline void ldsm_x2_t(uint32_t& r0, uint32_t& r1, uint32_t addr) {
  uint32_t r[2];
  ldsm(r, 2, true, addr);
  r0 = r[0];
  r1 = r[1];
}

template <class T>
inline float half_bits_to_float(uint16_t bits) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const uint32_t w = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &w, 4);
    return f;
  } else {
    __half_raw r;
    r.x = bits;
    return __half2float(__half(r));
  }
}
// One lane's share of D += A B: lane L computes its accumulators (rows g, g+8; cols 2t, 2t+1)
// from every lane's A and B registers, placed by the PTX fragment layout.
template <class T>
inline void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t in[6] = {a[0], a[1], a[2], a[3], b0, b1};
  const uint32_t* s = emu::exchange(in, 6);
  auto elem = [&](int ln, int reg, int k) {
    const uint32_t w = s[ln * 8 + reg];
    return half_bits_to_float<T>(uint16_t(k % 2 ? w >> 16 : w & 0xffff));
  };
  auto A = [&](int r, int k) {
    return elem((r % 8) * 4 + (k % 8) / 2, (r >= 8) + 2 * (k >= 8), k);
  };
  auto B = [&](int k, int n) { return elem(n * 4 + (k % 8) / 2, 4 + (k >= 8), k); };
  const int L = emu::lane(), g = L / 4, t = L % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    double sum = 0;
    for (int k = 0; k < 16; ++k) sum += double(A(row, k)) * double(B(k, col));
    d[i] = float(double(d[i]) + sum);
  }
}

inline float fast_exp2(float x) {
  return std::exp2(x);
}
inline float shfl_xor(float v, int mask) {
  uint32_t w;
  std::memcpy(&w, &v, 4);
  const uint32_t* s = emu::exchange(&w, 1);
  float r;
  std::memcpy(&r, &s[(emu::lane() ^ mask) * 8], 4);
  return r;
}
inline void atomic_add2(float* p, float a, float b) {
  p[0] += a;
  p[1] += b;
}

template <auto Kernel, class Params>
void launch_kernel(dim3 grid, dim3 block, size_t smem, const Params& p, const char*) {
  if (smem > 227 * 1024) emu::die("dynamic shared memory above 227 KiB: " + std::to_string(smem));
  if (block.y != 1 || block.z != 1) emu::die("1-D blocks only");
  emu::g_launch_log.push_back(__PRETTY_FUNCTION__);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x)
        emu::run_block(make_uint3(x, y, z), make_uint3(grid.x, grid.y, grid.z),
                       make_uint3(block.x, 1, 1), smem, [&] { Kernel(p); });
}
inline void zero_async(void* p, size_t n, const char*) {
  std::memset(p, 0, n);
}

}  // namespace loom::kernels::cuda::attn
