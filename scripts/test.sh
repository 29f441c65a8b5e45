#!/usr/bin/env bash
# The whole test suite, with its own set-up, on a fresh machine.
#   bash scripts/test.sh
# Installs what the tests need (Chromium and curl from Debian, the pinned
# Claude Code CLI from npm into .tools/), checks formatting and lints, then
# runs every test with nextest (or cargo test where nextest is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_CODE_VERSION=2.1.330

step() { printf '\n== %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)"; exit 1; }

step "system packages: Chromium (API page test), curl (examples)"
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
command -v npm >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

step "Claude Code CLI $CLAUDE_CODE_VERSION (for the real-CLI tests)"
bin=.tools/node_modules/@anthropic-ai/claude-code-linux-x64/claude
installed=$(node -p "require('./.tools/node_modules/@anthropic-ai/claude-code/package.json').version" 2>/dev/null || true)
if [ ! -x "$bin" ] || [ "$installed" != "$CLAUDE_CODE_VERSION" ]; then
  mkdir -p .tools
  [ -f .tools/package.json ] || echo '{"private":true}' > .tools/package.json
  npm install --prefix .tools --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null
fi
"$bin" --version

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
