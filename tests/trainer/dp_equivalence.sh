#!/usr/bin/env bash
# Data parallelism trains like one rank: a 5-step run of the tiny recipe under mpirun, through the
# real CLI, against the same recipe in one process. Losses (metrics.jsonl) must agree within a
# relative 1e-5 and the final parameters within 1e-6 absolute: the differences allowed are those
# of the order of float sums (measured: about 1e-7 and 3e-8). SGD keeps that comparison tight:
# AdamW and Muon turn rounding noise in near-zero gradient entries into lr-sized steps.
# The MoE balance loss is off: it is a statistic of each micro-batch, so it changes with the split.
# Usage: dp_equivalence.sh LOOM COMPARE_RUNS RECIPE SCENARIO, with LOOM_MPIRUN set to the mpirun
# command (with its flags). Scenarios:
#   dp2               parallel.dp = 2 on 2 ranks, one gradient bucket
#   dp4               parallel.dp = 4 on 4 ranks with 0.1 MiB buckets (several all-reduces in
#                     flight during backward)
#   dp2_accum2        dp = 2 with train.grad_accum = 2 (non-final micro-batches do not reduce)
#   classifier_dp2    the classifier trainer at dp = 2
#   resume_dp2_dp4    3 steps at dp = 2, then --resume to step 5 at dp = 4 (every rank reads the
#                     checkpoint the root wrote)
set -u
loom=$1 compare=$2 recipe=$3 scenario=$4
read -r -a mpirun <<< "${LOOM_MPIRUN:?set LOOM_MPIRUN to the mpirun command}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--set train.steps=5 --set optim.name=sgd --set optim.lr=0.05 --set optim.warmup_steps=0
        --set optim.schedule=constant --set model.aux_loss_coef=0)
fail() { echo "FAIL: $*"; exit 1; }

# run NP OUT ARGS...: `loom train` on NP ranks (NP = 1: no mpirun), log in OUT.log.
run() {
  local np=$1 out=$2
  shift 2
  local cmd=("$loom" train "$recipe" "${common[@]}" --out "$out" "$@")
  [ "$np" -gt 1 ] && cmd=("${mpirun[@]}" -np "$np" "${cmd[@]}" --set "parallel.dp=$np")
  echo "+ ${cmd[*]}"
  "${cmd[@]}" > "$out.log" 2>&1 || { cat "$out.log"; fail "exit status $? from ${cmd[*]}"; }
}

extra=()
case $scenario in
  dp2) run 2 "$tmp/dp" ;;
  dp4)
    run 4 "$tmp/dp" --set parallel.bucket_mb=0.1
    grep -q "[0-9] gradient buckets" "$tmp/dp.log" || { cat "$tmp/dp.log"; fail "one bucket"; } ;;
  dp2_accum2) run 2 "$tmp/dp" --set train.grad_accum=2 ;;
  classifier_dp2)
    extra=(--set task=classifier)
    run 2 "$tmp/dp" "${extra[@]}" ;;
  resume_dp2_dp4)
    run 2 "$tmp/dp" --set train.steps=3
    run 4 "$tmp/dp" --resume
    grep -q "resuming from .*/checkpoints/3" "$tmp/dp.log" || { cat "$tmp/dp.log"; fail "no resume"; } ;;
  *) fail "unknown scenario $scenario" ;;
esac
run 1 "$tmp/one" "${extra[@]}"
"$compare" "$tmp/one" "$tmp/dp" 1e-5 1e-6 || fail "$scenario differs from one rank"
echo "PASS"
