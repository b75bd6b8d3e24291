#!/usr/bin/env python3
# The peer of bench_nccl: the same collectives, sizes and bus-bandwidth formulas through
# torch.distributed's NCCL backend (PyTorch calls ncclAllReduce / ncclSend+ncclRecv directly, so
# this is the raw NCCL rate of the machine). Launched like bench_nccl, under mpirun (it reads Open
# MPI's rank variables):
#   mpirun -np 2 python3 bench/nccl_peer.py [--iters 20] [--sizes-mib 1,16,64,256,1024]
import argparse, json, os
import torch
import torch.distributed as dist
from peer_timing import median_seconds

ap = argparse.ArgumentParser()
ap.add_argument("--iters", type=int, default=20)
ap.add_argument("--sizes-mib", default="1,16,64,256,1024")
a = ap.parse_args()
rank = int(os.environ["OMPI_COMM_WORLD_RANK"]); n = int(os.environ["OMPI_COMM_WORLD_SIZE"])
local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", rank))
os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", "29533")
torch.cuda.set_device(local % torch.cuda.device_count())
dist.init_process_group("nccl", rank=rank, world_size=n)

def median_s(f):
    return median_seconds(a.iters, f)

for mib in map(int, a.sizes_mib.split(",")):
    numel = mib * (1 << 20) // 4 // n * n; nbytes = numel * 4
    x = torch.ones(numel, device="cuda")
    r = median_s(lambda: dist.all_reduce(x))
    rows = torch.ones(numel, device="cuda"); out = torch.empty_like(rows)
    t = median_s(lambda: dist.all_to_all_single(out, rows))
    if rank == 0:
        print(json.dumps(dict(impl="torch-" + torch.__version__, ranks=n, mib=mib, all_reduce_ms=round(r * 1e3, 3),
                              all_reduce_busbw_GBps=round(nbytes * 2 * (n - 1) / n / r / 1e9, 1),
                              all_to_all_ms=round(t * 1e3, 3),
                              all_to_all_busbw_GBps=round(nbytes * (n - 1) / n / t / 1e9, 1))), flush=True)
dist.destroy_process_group()
