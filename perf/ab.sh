#!/usr/bin/env bash
# Before/after on a shared, noisy host: runs S2 (19,900 subscribers on one channel at
# 15 msg/s) and S3 (weddings at 2,000 and 8,000 publishes/s) against two server binaries,
# alternating A, B, A, B, … so that the host's load falls on both alike, then prints the
# median server CPU per delivery of each step and the ratio B/A.
#
# Usage, from the workspace root, with both binaries built in the release profile:
#   bash perf/ab.sh BEFORE_BIN AFTER_BIN [ROUNDS (default 5)] [OUT_DIR (default perf/results/ab)]
# e.g. build the "before" commit in a git worktree, copy its target/release/ringbearer aside,
# then `cargo build --release -p ringbearer -p ringbearer-perf` here.
set -uo pipefail
cd "$(dirname "$0")/.."
A=${1:?before binary}
B=${2:?after binary}
ROUNDS=${3:-5}
OUT=${4:-perf/results/ab}
P=${PERF_BIN:-target/release/ringbearer-perf}
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for side in a b; do
    bin=$A; [ "$side" = b ] && bin=$B
    echo "+ round $round $side: s2, s3 ($(date +%T))"
    "$P" s2 --server-bin "$bin" --duration-secs 10 --rate 15 --out "$OUT/s2-$side-$round" >"$OUT/s2-$side-$round.log" 2>&1 || echo "(s2 failed)"
    "$P" s3 --server-bin "$bin" --duration-secs 5 --rate 2000,8000 --out "$OUT/s3-$side-$round" >"$OUT/s3-$side-$round.log" 2>&1 || echo "(s3 failed)"
  done
done
# Column 7 of a step's row in the scenario's Markdown table is CPU ns per delivery.
median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; print m}'; }
col() { local scen=$1 side=$2 step=$3; for f in "$OUT"/$scen-$side-*/*.md; do grep "^| $step |" "$f" | awk -F'|' '{gsub(/ /,"",$7); print $7}'; done; }
printf '%-22s %10s %10s %7s %s\n' step "A ns" "B ns" "B/A" "(median CPU ns per delivery over $ROUNDS rounds each)"
for spec in "s2 rate-15" "s3 rate-2000" "s3 rate-8000"; do
  set -- $spec
  a=$(col "$1" a "$2" | median); b=$(col "$1" b "$2" | median)
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", b / a; else print "-" }')
  printf '%-22s %10s %10s %7s\n' "$1 $2" "$a" "$b" "$r"
done
