#!/usr/bin/env python3
# The peer of `attention_check --bench-only`: PyTorch's scaled_dot_product_attention (its default
# backend choice) forward, backward and both, bf16, on the same shapes and timed the same way
# (CUDA events around each call, median of 20 after 3 warm-ups; FLOPs 4*B*H*N^2*D forward and 2.5x
# that backward, halved when causal). Prints one line per shape in attention_check's format.
#   python3 bench/attention_peer.py
import torch
import torch.nn.functional as F

def median_ms(f, iters=20):
    for _ in range(3): f()
    ts = []
    for _ in range(iters):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); f(); e1.record(); e1.synchronize(); ts.append(e0.elapsed_time(e1))
    return sorted(ts)[len(ts) // 2]

def bench(label, B, H, N, D, causal=False, bnhd=False):
    shape = (B, N, H, D) if bnhd else (B, H, N, D)
    def make():
        t = torch.rand(shape, device="cuda", dtype=torch.bfloat16) * 2 - 1
        return (t.transpose(1, 2) if bnhd else t).requires_grad_()
    q, k, v = make(), make(), make()
    dout = torch.rand_like(q) * 2 - 1
    fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = fwd()
    bwd = lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    both = lambda: torch.autograd.grad(fwd(), (q, k, v), dout)
    t_f, t_b, t_fb = median_ms(fwd), median_ms(bwd), median_ms(both)
    flop_f = 4.0 * B * H * N * N * D * (0.5 if causal else 1.0)
    flop_b = 2.5 * flop_f
    print(f"{label:<34} fwd {t_f:7.3f} ms {flop_f / t_f * 1e-9:6.1f} TF/s | "
          f"bwd {t_b:7.3f} ms {flop_b / t_b * 1e-9:6.1f} TF/s | "
          f"fwd+bwd {t_fb:7.3f} ms {(flop_f + flop_b) / t_fb * 1e-9:6.1f} TF/s", flush=True)

print(f"torch {torch.__version__} scaled_dot_product_attention, bf16")
bench("B32 H12 N1024 D64 [B,H,N,D]", 32, 12, 1024, 64)
bench("B32 H12 N1024 D64 [B,N,H,D]", 32, 12, 1024, 64, bnhd=True)
bench("B32 H12 N1024 D64 causal", 32, 12, 1024, 64, causal=True)
bench("B32 H12 N1024 D128", 32, 12, 1024, 128)
bench("DiT-B/2 B256 H12 N256 D64 [B,N,H,D]", 256, 12, 256, 64, bnhd=True)
bench("DiT-XL/2 B256 H16 N256 D72 [B,N,H,D]", 256, 16, 256, 72, bnhd=True)
