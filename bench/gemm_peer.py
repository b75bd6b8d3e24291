#!/usr/bin/env python3
# The peer of bench_gemm: the same three bf16 GEMMs per DiT linear layer through PyTorch on CUDA
# (F.linear with bias; dy @ W; dy^T @ x), timed the same way (3 warm-ups, median of --iters
# synchronized calls). One JSON line per layer.
#   python3 bench/gemm_peer.py [--width 768] [--tokens 65536] [--iters 20]
import argparse, json
import torch
import torch.nn.functional as F
from peer_timing import median_seconds

ap = argparse.ArgumentParser()
ap.add_argument("--width", type=int, default=768); ap.add_argument("--tokens", type=int, default=65536)
ap.add_argument("--iters", type=int, default=20)
a = ap.parse_args()

def median_s(f):
    return median_seconds(a.iters, f)

w_ = a.width
for name, k, n in [("qkv", w_, 3 * w_), ("proj", w_, w_), ("fc1", w_, 4 * w_), ("fc2", 4 * w_, w_)]:
    x = torch.randn(a.tokens, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dy = torch.randn(a.tokens, n, device="cuda", dtype=torch.bfloat16)
    flops = 2.0 * a.tokens * k * n
    fwd = median_s(lambda: F.linear(x, w, b)); dx = median_s(lambda: dy @ w); dw = median_s(lambda: dy.t() @ x)
    print(json.dumps(dict(impl="torch-" + torch.__version__, layer=name, m=a.tokens, k=k, n=n,
                          fwd_tflops=round(flops / fwd / 1e12, 1), dx_tflops=round(flops / dx / 1e12, 1),
                          dw_tflops=round(flops / dw / 1e12, 1), total_ms=round((fwd + dx + dw) * 1e3, 3))))
