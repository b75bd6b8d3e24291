#!/usr/bin/env bash
# How a data-parallel job fails under mpirun, through the real CLI: it ends (never hangs) with a
# non-zero status and says why. Usage: dp_failures.sh LOOM RECIPE CASE, with LOOM_MPIRUN set to
# the mpirun command (with its flags). Cases:
#   bad_grid     parallel.dp = 3 on 2 ranks: exit status 2, the message names parallel.dp, no run
#                directory is created
#   mismatch     rank 1 gets another --set than rank 0: refused before training, naming rank 1
#   killed_rank  rank 1 is killed with SIGKILL mid-run: the job ends non-zero within 60 s
set -u
loom=$1 recipe=$2 case=$3
read -r -a mpirun <<< "${LOOM_MPIRUN:?set LOOM_MPIRUN to the mpirun command}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run=$tmp/run
fail() { cat "$tmp/log"; echo "FAIL: $*"; exit 1; }

case $case in
  bad_grid)
    "${mpirun[@]}" -np 2 "$loom" train "$recipe" --set parallel.dp=3 --out "$run" > "$tmp/log" 2>&1
    rc=$?
    [ "$rc" -eq 2 ] || fail "exit status $rc, expected 2"
    grep -q "loom: rank 0: error: .*parallel.dp: .* must equal the number of ranks (2 here)" \
      "$tmp/log" || fail "no message naming parallel.dp"
    [ ! -e "$run" ] || fail "the refused run created $run" ;;
  mismatch)
    # The wrapper adds a different seed on rank 1 only.
    "${mpirun[@]}" -np 2 sh -c \
      '[ "$OMPI_COMM_WORLD_RANK" = 1 ] && set -- "$@" --set train.seed=7; exec "$@"' sh \
      "$loom" train "$recipe" --set parallel.dp=2 --out "$run" > "$tmp/log" 2>&1
    rc=$?
    [ "$rc" -ne 0 ] || fail "exit status 0"
    grep -q "the resolved recipe differs between ranks: rank 1 has 0x[0-9a-f]*, rank 0 has" \
      "$tmp/log" || fail "no message naming rank 1"
    [ ! -e "$run" ] || fail "the refused run created $run" ;;
  killed_rank)
    start=$(date +%s)
    # Each rank's shell records its pid, which exec hands on to loom.
    "${mpirun[@]}" -np 2 sh -c 'echo $$ > "$0.$OMPI_COMM_WORLD_RANK"; exec "$@"' "$tmp/pid" \
      "$loom" train "$recipe" --set parallel.dp=2 --out "$run" > "$tmp/log" 2>&1 &
    job=$!
    for _ in $(seq 1 300); do  # wait (at most 30 s) for the first logged step
      [ -s "$run/metrics.jsonl" ] && break
      sleep 0.1
    done
    [ -s "$tmp/pid.1" ] && [ -s "$run/metrics.jsonl" ] || fail "the job did not start training"
    kill -9 "$(cat "$tmp/pid.1")"
    for _ in $(seq 1 600); do  # give the job 60 s to end
      kill -0 "$job" 2> /dev/null || break
      sleep 0.1
    done
    kill -9 "$job" 2> /dev/null && fail "the job still ran 60 s after rank 1 was killed"
    wait "$job"
    rc=$?
    elapsed=$(( $(date +%s) - start ))
    echo "job ended with status $rc, $elapsed s after start"
    [ "$rc" -ne 0 ] || fail "exit status 0 after a rank was killed"
    [ "$elapsed" -lt 60 ] || fail "the job took $elapsed s to end" ;;
  *) echo "FAIL: unknown case $case"; exit 1 ;;
esac
cat "$tmp/log"
echo "PASS"
