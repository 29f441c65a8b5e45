#!/usr/bin/env bash
# A profile-guided (PGO) release build of `iris` and `iris-bench`.
#
#   bench/pgo.sh            builds into target/pgo/release/
#
# 1. builds both with instrumentation (target/pgo-gen),
# 2. trains them: one short round of `iris-bench http` — every HTTP server
#    of the benchmark (bare hyper, plain axum, the floor, Iris open and
#    secured, and the ask route to an echo team) under wrk — so the
#    baselines are trained as much as Iris,
# 3. merges the profile and builds again with it (target/pgo).
#
# This is the release build: the benchmark targets of docs/benchmarks.md
# are measured on it. Needs wrk and rustup's llvm-tools component (both
# added here when missing; wrk through apt-get). PGO lays the code that
# runs together next to itself: Iris's request path is larger than the
# CPU's instruction cache, so fewer cache misses per request.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rustup component add llvm-tools >/dev/null 2>&1 || true
if ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
profdata=$(find "$(rustc --print sysroot)/lib/rustlib" -name llvm-profdata -type f | head -1)
[ -x "$profdata" ] || { echo "llvm-profdata not found (rustup component add llvm-tools)" >&2; exit 1; }
data=${PGO_DATA:-$root/target/pgo-data}   # where the profiles go
rm -rf "$data" && mkdir -p "$data"

CARGO_TARGET_DIR=$root/target/pgo-gen RUSTFLAGS="-Cprofile-generate=$data" \
  cargo build --release -p iris-cli -p iris-bench
ROUNDS=1 RUN_SECS=${TRAIN_SECS:-3} "$root/target/pgo-gen/release/iris-bench" http >/dev/null
"$profdata" merge -o "$data/merged.profdata" "$data"

CARGO_TARGET_DIR=$root/target/pgo RUSTFLAGS="-Cprofile-use=$data/merged.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
  cargo build --release -p iris-cli -p iris-bench
echo "built: target/pgo/release/iris and target/pgo/release/iris-bench"
