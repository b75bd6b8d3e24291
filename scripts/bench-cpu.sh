#!/usr/bin/env bash
# CPU benchmark of the main job's model against the PyTorch peer, in one call:
#   Fashion-MNIST DiT-MoE (4 layers, 128 wide, 4 heads, 4E2A + 1 shared, patch 4, 49 tokens),
#   batch 128, fp32, 2 threads. Needs Debian's python3-torch (/usr/bin/python3) for the peer and
#   ../shared/bench/ (or $LOOM_PEER_DIR) for its scripts. Prints a table and the JSON lines.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peer_dir=${LOOM_PEER_DIR:-$root/../shared/bench}
threads=${THREADS:-2}
cmake --build "$root/build" --target bench_dit_train >/dev/null
args=(--experts 4 --topk 2 --shared 1 --batch 128 --image 28 --channels 1 --patch 4 --classes 10)
loom_json=$(LOOM_NUM_THREADS=$threads "$root/build/bench/bench_dit_train" --depth 4 --width 128 \
  --heads 4 "${args[@]}")
peer_json=$(/usr/bin/python3 "$peer_dir/peer_pytorch.py" --size fmnist "${args[@]}" --device cpu \
  --threads "$threads")
echo "$loom_json"
echo "$peer_json"
/usr/bin/python3 - "$loom_json" "$peer_json" <<'PY'
import json, sys
l, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'workload':<44}{'loom img/s':>12}{'torch img/s':>13}{'ratio':>8}")
print(f"{'fmnist DiT-MoE 4E2A+1, b128, fp32, cpu':<44}{l['img_per_s']:>12.1f}{p['img_per_s']:>13.1f}"
      f"{l['img_per_s'] / p['img_per_s']:>8.2f}")
PY
