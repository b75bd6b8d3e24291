#pragma once
// Elementwise CPU kernels: map a scalar functor over one (contiguous) or two (broadcast, strided)
// operands into a contiguous output. The functors live with their ops in core/ops; these templates
// only own the loops and their parallel split.
#include <cstdint>

#include "kernels/cpu/strided.h"

namespace loom::kernels::cpu {

// y[i] = f(x[i]) for contiguous x, y of n elements.
template <class T, class U, class F>
void map_unary(const T* x, U* y, int64_t n, F f) {
  parallel_for(0, n, 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = f(x[i]);
  });
}

// out[idx] = f(a[idx], b[idx]) over `shape` (out contiguous; a and b strided, 0 = broadcast).
template <class A, class B, class O, class F>
void map_binary(int ndim, const int64_t* shape, const A* a, const int64_t* a_strides, const B* b,
                const int64_t* b_strides, O* out, const int64_t* out_strides, F f) {
  for_each_row<3>(ndim, shape, {a_strides, b_strides, out_strides},
                  [&](auto base, int64_t n, auto step) {
                    const A* pa = a + base[0];
                    const B* pb = b + base[1];
                    O* po = out + base[2];
                    if (step[0] == 1 && step[1] == 1) {
                      for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
                    } else if (step[0] == 1 && step[1] == 0) {
                      const B vb = *pb;
                      for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], vb);
                    } else if (step[0] == 0 && step[1] == 1) {
                      const A va = *pa;
                      for (int64_t i = 0; i < n; ++i) po[i] = f(va, pb[i]);
                    } else {
                      for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i * step[0]], pb[i * step[1]]);
                    }
                  });
}

// out = f(a, b, c) elementwise, all three strided/broadcast into a contiguous out (for `where`).
template <class A, class B, class C, class O, class F>
void map_ternary(int ndim, const int64_t* shape, const A* a, const int64_t* as, const B* b,
                 const int64_t* bs, const C* c, const int64_t* cs, O* out, const int64_t* os, F f) {
  for_each_row<4>(ndim, shape, {as, bs, cs, os}, [&](auto base, int64_t n, auto step) {
    for (int64_t i = 0; i < n; ++i)
      out[base[3] + i * step[3]] =
          f(a[base[0] + i * step[0]], b[base[1] + i * step[1]], c[base[2] + i * step[2]]);
  });
}

}  // namespace loom::kernels::cpu
