# The timing of the PyTorch peers of loom's CUDA benchmarks (gemm_peer.py, nccl_peer.py), the same
# as bench/timing.h: the median wall time of `iters` calls of f, each followed by a device
# synchronize, after three untimed warm-up calls.
import time
import torch

def median_seconds(iters, f):
    for _ in range(3): f()
    torch.cuda.synchronize(); ts = []
    for _ in range(iters):
        t0 = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]
