#!/usr/bin/env bash
# Sets up and builds loom on Debian: installs the missing build packages, configures build/ once
# (Release, Ninja, LOOM_CUDA=${LOOM_CUDA:-AUTO}) and builds incrementally.
#
#   scripts/setup.sh              set up + build
#   scripts/setup.sh test [ARGS]  set up + build + run every test (ctest ARGS, e.g. -R optim)
#   scripts/setup.sh train [ARGS] set up + build + run the main job: train the sample classifier
#                                 once (runs/fmnist_classifier), train the Fashion-MNIST DiT-MoE
#                                 (runs/fmnist_dit_moe, resumed when it exists; ARGS go to
#                                 `loom train`, e.g. --set train.steps=200), then `loom eval` it
#   scripts/setup.sh demo [ARGS]  set up + build + run `build/loom demo ARGS` (a 2-layer MLP)
#
# Packages are installed with apt-get as root, through sudo otherwise; without either the script
# prints the exact command to run and exits 1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode="${1:-build}"
case "$mode" in
  build | test | demo | train) ;;
  -h | --help)
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "setup.sh: unknown command '$mode' (expected: train, test, demo, or nothing to just build)" >&2
    exit 2
    ;;
esac
[[ $# -gt 0 ]] && shift

# -- packages ------------------------------------------------------------------------------------
packages=(cmake ninja-build g++ libopenblas-dev libopenmpi-dev openmpi-bin libcereal-dev
  libcli11-dev libtomlplusplus-dev libgtest-dev libgmock-dev libpng-dev zlib1g-dev
  dataset-fashion-mnist)

missing=()
for p in "${packages[@]}"; do
  # dpkg -s also succeeds for removed packages whose config files remain; check the status.
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} > 0)); then
  echo "setup.sh: missing packages: ${missing[*]}"
  if [[ "$(id -u)" == 0 ]]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "setup.sh: these packages are missing and neither root nor sudo is available:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    echo "Run that command as root, then run scripts/setup.sh again." >&2
    exit 1
  fi
  apt_get=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q)
  # Fresh containers ship without package lists; otherwise try the lists we have first.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    "${apt_get[@]}" update
  fi
  if ! "${apt_get[@]}" install "${missing[@]}"; then
    echo "setup.sh: install failed; refreshing the package lists and retrying"
    "${apt_get[@]}" update
    "${apt_get[@]}" install "${missing[@]}"
  fi
fi

# -- configure (once) and build ------------------------------------------------------------------
cuda="${LOOM_CUDA:-AUTO}"
configured=0
if [[ -f build/CMakeCache.txt && -f build/build.ninja ]]; then
  configured=1
  # An explicit LOOM_CUDA that differs from the cached choice reconfigures.
  cached="$(sed -n 's/^LOOM_CUDA:[A-Z]*=//p' build/CMakeCache.txt)"
  if [[ -n "${LOOM_CUDA:-}" && "$cached" != "$cuda" ]]; then configured=0; fi
fi
if ((configured == 0)); then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDA="$cuda"
fi
cmake --build build -j"$(nproc)"

case "$mode" in
  test) ctest --test-dir build --output-on-failure -j2 "$@" ;;
  demo) build/loom demo "$@" ;;
  train)
    if ! compgen -G 'runs/fmnist_classifier/checkpoints/*/manifest.json' >/dev/null; then
      build/loom train recipes/fmnist_classifier.toml
    fi
    resume=()
    compgen -G 'runs/fmnist_dit_moe/checkpoints/*/manifest.json' >/dev/null && resume=(--resume)
    build/loom train recipes/fmnist_dit_moe.toml "${resume[@]}" "$@"
    build/loom eval runs/fmnist_dit_moe
    ;;
esac
