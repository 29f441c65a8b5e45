#!/usr/bin/env bash
# Instructions per request of `GET /api/v1/status` under callgrind, the
# deterministic measure of docs/benchmarks.md.
#
#   bench/callgrind.sh [serve|serve-secured|serve-floor|serve-bare]
#   KEEP=FILE bench/callgrind.sh ...   also keeps the profile, for callgrind_annotate
#
# Needs valgrind and wrk, and a release build
# (cargo build --release -p iris-cli -p iris-bench).
set -euo pipefail
mode=${1:-serve}
bin=$(dirname "$0")/../target/release/iris-bench
out=$(mktemp -d)
trap 'pkill -f "valgrind.*iris-bench $mode" 2>/dev/null || true; rm -rf "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$mode" >"$out/addr" 2>"$out/err" &
for _ in $(seq 60); do [ -s "$out/addr" ] && break; sleep 0.5; done
addr=$(head -1 "$out/addr"); key=$(sed -n 2p "$out/addr")
auth=(); [ -n "$key" ] && auth=(-H "Authorization: Bearer $key")
wrk -t1 -c8 -d3s "${auth[@]}" "http://$addr/api/v1/status" >/dev/null   # warm up
callgrind_control -z >/dev/null
n=$(wrk -t1 -c8 -d10s "${auth[@]}" "http://$addr/api/v1/status" | awk '/requests in/ {print $1}')
callgrind_control -d >/dev/null
sleep 1
total=$(callgrind_annotate "$out"/cg.* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "$mode: $n requests, $((total / n)) instructions per request"
if [ -n "${KEEP:-}" ]; then cp "$out"/cg.* "$KEEP"; echo "profile: $KEEP ($n requests)"; fi
