#!/usr/bin/env bash
# GPU benchmark against the PyTorch peer, every row in one call (../shared/BENCH.md):
# for each workload, loom's bench_dit_train (bf16 autocast) and the peer's eager run on the same
# GPU; prints a table (img/s, ratio, model TFLOP/s, MFU over 790 TFLOP/s, peak memory) last and
# writes the JSON lines to $OUT/bench-gpu.jsonl when $OUT is set.
#   usage: scripts/bench-gpu.sh [build-dir] [rows: fmnist,B,XL,moeS,moeB,attn]
# The row attn prints attention alone, loom's kernels and the cuDNN path (tests/gpu/attention_check
# --bench-only), then PyTorch's scaled_dot_product_attention on the same shapes
# (bench/attention_peer.py).
# Needs the peer scripts in .peer/ (copy ../shared/bench there and carry it) or $LOOM_PEER_DIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-gpu}
rows=${2:-${LOOM_BENCH_ROWS:-fmnist,B,XL,moeS}}
peer_dir=${LOOM_PEER_DIR:-$root/.peer}
source "$root/scripts/cudnn-env.sh"  # the cuDNN the build was configured with, first in the path
out=${OUT:-/tmp}/bench-gpu.jsonl
: > "$out"
declare -A loom_args peer_args
loom_args[fmnist]="--depth 4 --width 128 --heads 4 --experts 4 --topk 2 --shared 1 --batch 128 --image 28 --channels 1 --patch 2 --classes 10"
peer_args[fmnist]="--size fmnist --experts 4 --topk 2 --shared 1 --batch 128 --image 28 --channels 1 --patch 2 --classes 10"
loom_args[B]="--depth 12 --width 768 --heads 12 --experts 0 --batch 256 --image 32 --channels 4 --patch 2 --classes 1000"
peer_args[B]="--size B --batch 256"
loom_args[XL]="--depth 28 --width 1152 --heads 16 --experts 0 --batch 256 --image 32 --channels 4 --patch 2 --classes 1000"
peer_args[XL]="--size XL --batch 256"
loom_args[moeS]="--depth 12 --width 384 --heads 6 --experts 8 --topk 2 --shared 2 --batch 256 --image 32 --channels 4 --patch 2 --classes 1000"
peer_args[moeS]="--size S --experts 8 --topk 2 --shared 2 --batch 256"
loom_args[moeB]="--depth 12 --width 768 --heads 12 --experts 8 --topk 2 --shared 2 --batch 256 --image 32 --channels 4 --patch 2 --classes 1000"
peer_args[moeB]="--size B --experts 8 --topk 2 --shared 2 --batch 256"
IFS=, read -ra names <<< "$rows"
for name in "${names[@]}"; do
  if [ "$name" = attn ]; then
    "$build/tests/attention_check" --bench-only | grep -v VARIANT || echo "attention_check failed"
    python3 "$root/bench/attention_peer.py" || echo "attention_peer.py failed"
    continue
  fi
  l=$("$build/bench/bench_dit_train" --device cuda ${loom_args[$name]} 2>&1 | tail -1) || l="{\"error\": \"loom failed\"}"
  p=$(python3 "$peer_dir/peer_pytorch.py" ${peer_args[$name]} 2>&1 | tail -1) || p="{\"error\": \"peer failed\"}"
  echo "{\"row\": \"$name\", \"loom\": $l, \"peer\": $p}" | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, sys
print(f"{'row':<8}{'loom img/s':>11}{'torch img/s':>12}{'ratio':>7}{'loom TF/s':>10}{'MFU':>6}{'loom GiB':>9}{'torch GiB':>10}")
for line in open(sys.argv[1]):
    r = json.loads(line); l, p = r["loom"], r["peer"]
    if "img_per_s" not in l or "img_per_s" not in p:
        print(f"{r['row']:<8} failed: {l.get('error', '')} {p.get('error', '')}"); continue
    tf = l["model_gflops"] / 1e3
    print(f"{r['row']:<8}{l['img_per_s']:>11.1f}{p['img_per_s']:>12.1f}{l['img_per_s'] / p['img_per_s']:>7.2f}"
          f"{tf:>10.1f}{tf / 790:>6.0%}{l['peak_mem_GiB']:>9.2f}{p['peak_mem_GiB']:>10.2f}")
PY
