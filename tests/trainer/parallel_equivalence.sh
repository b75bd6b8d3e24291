#!/usr/bin/env bash
# Every parallel layout trains like one rank: a 5-step run of the tiny recipe under mpirun, through
# the real CLI, against the same recipe in one process (or, for the sharded optimizer, against the
# same layout unsharded). Usage: parallel_equivalence.sh LOOM COMPARE_RUNS RECIPE SCENARIO, with
# LOOM_MPIRUN set to the mpirun command (with its flags).
#
# Tolerances (compare_runs: per-step losses relative, final parameters absolute):
#   SGD (the default here): 1e-5 and 1e-6. The layouts change only the order of float sums (a
#     rank's mean over its rows, the average over dp, the sums inside tensor- and
#     sequence-parallel layers); measured: losses within 7e-8, parameters within 3e-8.
#   Muon (+ AdamW for the non-matrix parameters): 1e-5 and 1e-4. AdamW turns rounding noise in
#     near-zero gradient entries into lr-sized steps (measured 9e-6 at 1e-3, already at dp = 2
#     alone); losses still agree within 4e-8. Orthogonalizing each tp slice on its own instead of
#     the whole matrix moves parameters by 2.5e-2 and losses by 6e-4, so these bounds catch it.
#   The sharded optimizer (optim.shard_state) against the same layout unsharded: 0 and 0, bitwise.
# The MoE balance loss is off (model.aux_loss_coef = 0): it is a statistic of each rank's
# micro-batch, so it changes with dp (tp and sp gather the tokens and keep it exact).
#
# On GPUs (LOOM_EQUIV_DEVICE=cuda, the `gpu`-labelled entries): every run trains on CUDA with
# one GPU per rank and NCCL between them, in f32 with TF32 off (LOOM_EQUIV_PRECISION=bf16 for
# bf16 autocast, with the tolerances widened to 2e-2 and 5e-3: bf16 rounds the activations of
# each layout's different GEMM shapes differently; measured at dp = 2 on two H200s: losses within
# 2.1e-4, parameters 2.2e-4, SGD momentum buffers 1.3e-3). Exits 77 (skipped) when there are fewer GPUs
# than LOOM_EQUIV_RANKS (the scenario's largest rank count).
#
# Scenarios (ranks in parentheses; the tiny recipe is a DiT-MoE, "dense" sets num_experts = 0 so
# the MLP is split by tp too):
#   dp2 (2), dp4 (4, 0.1 MiB buckets: several all-reduces in flight), dp2_accum2 (2, two
#     micro-batches), classifier_dp2 (2, the classifier trainer)
#   resume_dp2_dp4     3 steps at dp = 2, then --resume to step 5 at dp = 4 (4)
#   tp2                dense DiT, tp = 2 (2)
#   tp2_seqpar         DiT-MoE, tp = 2 with Megatron sequence parallelism (2)
#   sp2                DiT-MoE, Ulysses sp = 2 (2)
#   dp2_tp2            DiT-MoE, dp = 2 x tp = 2 (4)
#   tp2_sp2            dense DiT, tp = 2 x sp = 2 with sequence parallelism (4)
#   muon_dp2_tp2       Muon + AdamW at dp = 2 x tp = 2: split matrices orthogonalized whole (4)
#   zero1_adamw_dp2    AdamW with optim.shard_state at dp = 2 against dp = 2 unsharded (2)
#   zero1_muon_dp2_tp2 distributed Muon (shard_state) at dp = 2 x tp = 2 against unsharded (4)
#   resume_dp2tp2_np1  SGD: 3 steps at dp = 2 x tp = 2, resumed to 5 in one process (4)
#   resume_np1_dp2tp2  distributed Muon: 3 steps in one process, resumed at dp = 2 x tp = 2 with
#                      shard_state (4)
#   resume_zero1_dp2   AdamW: 3 steps sharded at dp = 2, resumed unsharded, against dp = 2 (2)
#   ep2_dp2            DiT-MoE, dp = 2 with the routed experts split over ep = 2 (2)
#   ep2_dp4            dp = 4 x ep = 2: two ep groups, expert gradients averaged over edp pairs (4)
#   ep4_dp4            dp = 4 x ep = 4: one expert per rank, no edp reduction (4)
#   muon_ep2_dp4       Muon + AdamW (the fmnist recipe's optimizer) at dp = 4 x ep = 2 (4)
#   resume_ep2dp4_np1  3 steps at dp = 4 x ep = 2, resumed to 5 in one process (4)
#   resume_np1_ep2dp4  3 steps in one process, resumed at dp = 4 x ep = 2 (4)
set -u
loom=$1 compare=$2 recipe=$3 scenario=$4
read -r -a mpirun <<< "${LOOM_MPIRUN:?set LOOM_MPIRUN to the mpirun command}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--set train.steps=5 --set optim.warmup_steps=0 --set optim.schedule=constant
        --set model.aux_loss_coef=0)
sgd=(--set optim.name=sgd --set optim.lr=0.05)
muon=(--set optim.name=muon --set optim.lr=1e-3)
adamw=(--set optim.name=adamw --set optim.lr=1e-3)
dense=(--set model.num_experts=0)
seqpar=(--set parallel.sequence_parallel=true)
shard=(--set optim.shard_state=true)
ep2=(--set parallel.ep=2)
# layout DP TP SP: the --set flags of a grid.
layout() { echo --set parallel.dp="$1" --set parallel.tp="$2" --set parallel.sp="$3"; }
fail() { echo "FAIL: $*"; exit 1; }
# The sharded optimizer's scenarios compare bitwise on the CPU. On GPUs the reference run itself
# does not repeat to the last bit (index_add, e.g. the label embedding's gradient, adds with
# atomics in no fixed order: 3e-8 apart on parameters, measured on two H200s), so the device's
# tolerances stay.
exact() { [ "${LOOM_EQUIV_DEVICE:-cpu}" = cuda ] || { rtol=0; atol=0; }; }

# What every run of the scenario shares (model, optimizer), the reference and the tolerances;
# the scenarios below change them.
model=() opt=("${sgd[@]}") ref_np=1 ref=() rtol=1e-5 atol=1e-6
device=()
if [ "${LOOM_EQUIV_DEVICE:-cpu}" = cuda ]; then
  precision=${LOOM_EQUIV_PRECISION:-f32}
  device=(--set train.device=cuda --set train.precision="$precision")
  [ "$precision" = bf16 ] && rtol=2e-2 atol=5e-3
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU" || true)
  if [ "${gpus:-0}" -lt "${LOOM_EQUIV_RANKS:-2}" ]; then
    echo "SKIP: $scenario needs ${LOOM_EQUIV_RANKS:-2} GPUs, found ${gpus:-0}"
    exit 77
  fi
fi

# run NP OUT ARGS...: `loom train` on NP ranks (NP = 1: no mpirun), log in OUT.log.
run() {
  local np=$1 out=$2
  shift 2
  local cmd=("$loom" train "$recipe" "${common[@]}" "${device[@]}" "${model[@]}" "${opt[@]}"
             --out "$out" "$@")
  [ "$np" -gt 1 ] && cmd=("${mpirun[@]}" -np "$np" "${cmd[@]}")
  echo "+ ${cmd[*]}"
  local status=0
  "${cmd[@]}" > "$out.log" 2>&1 || status=$?
  [ "$status" = 0 ] || { cat "$out.log"; fail "exit status $status from ${cmd[*]}"; }
}
# expect FILE PATTERN: the log says what the scenario is about.
expect() { grep -q "$2" "$1" || { cat "$1"; fail "no '$2' in $1"; }; }

par=$tmp/par
case $scenario in
  dp2) run 2 "$par" $(layout 2 1 1) ;;
  dp4)
    run 4 "$par" $(layout 4 1 1) --set parallel.bucket_mb=0.1
    expect "$par.log" "[0-9] gradient buckets" ;;
  dp2_accum2) run 2 "$par" $(layout 2 1 1) --set train.grad_accum=2 ;;
  classifier_dp2)
    model=(--set task=classifier)
    run 2 "$par" $(layout 2 1 1) ;;
  resume_dp2_dp4)
    run 2 "$par" $(layout 2 1 1) --set train.steps=3
    run 4 "$par" $(layout 4 1 1) --resume
    expect "$par.log" "resuming from .*/checkpoints/3" ;;
  tp2)
    model=("${dense[@]}")
    run 2 "$par" $(layout 1 2 1)
    expect "$par.log" "parallel: dp 1 x tp 2 over 2 ranks" ;;
  tp2_seqpar)
    run 2 "$par" $(layout 1 2 1) "${seqpar[@]}"
    expect "$par.log" "tp 2 (sequence parallel)" ;;
  sp2) run 2 "$par" $(layout 1 1 2) ;;
  dp2_tp2) run 4 "$par" $(layout 2 2 1) ;;
  tp2_sp2)
    model=("${dense[@]}")
    run 4 "$par" $(layout 1 2 2) "${seqpar[@]}" ;;
  muon_dp2_tp2)
    opt=("${muon[@]}") atol=1e-4
    run 4 "$par" $(layout 2 2 1) ;;
  zero1_adamw_dp2)
    opt=("${adamw[@]}") ref_np=2 ref=($(layout 2 1 1)); exact
    run 2 "$par" $(layout 2 1 1) "${shard[@]}"
    expect "$par.log" "optimizer state sharded over the 2 dp ranks" ;;
  zero1_muon_dp2_tp2)
    opt=("${muon[@]}") ref_np=4 ref=($(layout 2 2 1)); exact
    run 4 "$par" $(layout 2 2 1) "${shard[@]}" ;;
  resume_dp2tp2_np1)
    run 4 "$par" $(layout 2 2 1) --set train.steps=3
    run 1 "$par" --resume
    expect "$par.log" "resuming from .*/checkpoints/3" ;;
  resume_np1_dp2tp2)
    opt=("${muon[@]}") atol=1e-4
    run 1 "$par" --set train.steps=3
    run 4 "$par" $(layout 2 2 1) "${shard[@]}" --resume
    expect "$par.log" "resuming from .*/checkpoints/3" ;;
  resume_zero1_dp2)
    opt=("${adamw[@]}") ref_np=2 ref=($(layout 2 1 1)); exact
    run 2 "$par" $(layout 2 1 1) "${shard[@]}" --set train.steps=3
    run 2 "$par" $(layout 2 1 1) --resume
    expect "$par.log" "resuming from .*/checkpoints/3" ;;
  ep2_dp2)
    run 2 "$par" $(layout 2 1 1) "${ep2[@]}"
    expect "$par.log" "parallel: dp 2 (experts over ep 2)" ;;
  ep2_dp4)
    run 4 "$par" $(layout 4 1 1) "${ep2[@]}"
    expect "$par.log" "parallel: dp 4 (experts over ep 2)" ;;
  ep4_dp4)
    run 4 "$par" $(layout 4 1 1) --set parallel.ep=4
    expect "$par.log" "parallel: dp 4 (experts over ep 4)" ;;
  muon_ep2_dp4)
    opt=("${muon[@]}") atol=1e-4
    run 4 "$par" $(layout 4 1 1) "${ep2[@]}" ;;
  resume_ep2dp4_np1)
    run 4 "$par" $(layout 4 1 1) "${ep2[@]}" --set train.steps=3
    run 1 "$par" --resume
    expect "$par.log" "resuming from .*/checkpoints/3" ;;
  resume_np1_ep2dp4)
    run 1 "$par" --set train.steps=3
    run 4 "$par" $(layout 4 1 1) "${ep2[@]}" --resume
    expect "$par.log" "resuming from .*/checkpoints/3" ;;
  *) fail "unknown scenario $scenario" ;;
esac
run "$ref_np" "$tmp/ref" "${ref[@]}"
"$compare" "$tmp/ref" "$par" "$rtol" "$atol" || fail "$scenario differs from the reference"
echo "PASS"
