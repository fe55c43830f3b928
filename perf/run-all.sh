#!/usr/bin/env bash
# One short run of every scenario against ringbearer and the baseline (--compare), the
# figures of perf/REPORT.md. Needs ~17 minutes on a 2-core host. Usage, from the workspace
# root:  bash perf/run-all.sh [OUT_DIR]   (default perf/results)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-perf/results}
cargo build --release -p ringbearer -p ringbearer-perf
P=target/release/ringbearer-perf
mkdir -p "$OUT"
run() { echo "+ $P $*"; "$P" "$@" --out "$OUT" >/dev/null || echo "(failed: $*)"; }
runto() { local d=$1; shift; echo "+ $P $* --out $OUT/$d"; "$P" "$@" --out "$OUT/$d" >/dev/null || echo "(failed: $*)"; }
run s1 --compare --duration-secs 30
run s3 --compare --duration-secs 5 --rate 2000,4000,8000,16000,32000
# S4 also gives connection establishment p50/p99 per connection (SPEC: < 300 ms p99).
run s4 --compare
# The same storm offered 8× shallower (96 attempts in flight instead of 768): per-connection
# latency in a storm is mostly queueing (in flight ÷ accept rate), see docs/performance.md.
runto s4-c32 s4 --compare --connect-concurrency 32
run s5 --compare
run s6 --compare --duration-secs 5
# The same with the write-ahead log out of the way, to split engine and log costs.
runto memory s6 --duration-secs 5 --durability memory
run s7 --compare --duration-secs 10 --rate 8000
# S2: all 19,900 on one channel (the SPEC's 1 msg/s case and rising), and 2,000 for the
# higher rates.
run s2 --compare --duration-secs 10 --rate 1,5,15
runto s2-2000 s2 --compare --connections 2000 --duration-secs 5 --rate 10,50,125
# S8: channel switch (unsubscribe + subscribe with last_seen_id, 10 messages waiting),
# 19,896 connected, 200 and 1,000 switches/s (SPEC: < 200 ms p99).
run s8 --compare
# S1 with every connection over TLS (self-signed certificate made for the run; the baseline
# speaks TLS through tokio-rustls): memory per idle TLS connection. Writes s1-idle-tls.*.
run s1 --tls --compare --duration-secs 15
