# Sourced by the GPU scripts (gpu-check.sh, bench-gpu.sh): picks the newest cuDNN on the machine.
# cuDNN's fused attention backward needs cuDNN >= 9.17 (kernels/cuda/attention_cudnn.h), and a GPU
# image may carry an older system cuDNN beside PyTorch's newer wheel (nvidia.cudnn). When the
# wheel's is newer, exports LOOM_CUDNN_ROOT (for CMake) and puts its lib/ first on
# LD_LIBRARY_PATH (so cuDNN's own sub-libraries load from the same tree); otherwise leaves both.
cudnn_version_in() {  # include dir -> e.g. 91900 (0 when no cuDNN header is there)
  { cat "$1"/cudnn_version*.h 2>/dev/null || true; } |
    awk '/define CUDNN_(MAJOR|MINOR|PATCHLEVEL) / && n++ < 3 {v = v * 100 + $3} END {print v + 0}'
}
loom_cudnn_best=0
for loom_inc in /usr/local/cuda/include /usr/include /usr/include/x86_64-linux-gnu; do
  loom_v=$(cudnn_version_in "$loom_inc")
  if [ "$loom_v" -gt "$loom_cudnn_best" ]; then loom_cudnn_best=$loom_v; fi
done
loom_wheel=$(python3 -c "import nvidia.cudnn; print(list(nvidia.cudnn.__path__)[0])" 2>/dev/null || true)
if [ -n "$loom_wheel" ] && [ "$(cudnn_version_in "$loom_wheel/include")" -gt "$loom_cudnn_best" ]; then
  export LOOM_CUDNN_ROOT=$loom_wheel
  export LD_LIBRARY_PATH=$loom_wheel/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "cudnn-env: cuDNN $(cudnn_version_in "$loom_wheel/include") from $loom_wheel (system: $loom_cudnn_best)"
fi
unset loom_inc loom_v loom_wheel loom_cudnn_best
