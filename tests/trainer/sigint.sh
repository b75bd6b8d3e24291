#!/usr/bin/env bash
# SIGINT during `loom train` finishes the current step, writes a checkpoint and exits 0.
# Usage: sigint.sh LOOM_BINARY RECIPE
set -u
loom=$1 recipe=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run=$tmp/run
"$loom" train "$recipe" --out "$run" > "$run.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do  # wait (at most 30 s) for the first logged step
  [ -s "$run/metrics.jsonl" ] && break
  sleep 0.1
done
kill -INT "$pid"
wait "$pid"
rc=$?
cat "$run.log"
[ "$rc" -eq 0 ] || { echo "FAIL: exit status $rc after SIGINT"; exit 1; }
ls "$run"/checkpoints/*/manifest.json > /dev/null 2>&1 || { echo "FAIL: no checkpoint"; exit 1; }
grep -q "interrupted at step" "$run.log" || { echo "FAIL: no interruption message"; exit 1; }
echo "PASS"
