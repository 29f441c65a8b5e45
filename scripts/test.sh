#!/usr/bin/env bash
# The whole test suite, with its own set-up, on a fresh machine.
#   bash scripts/test.sh
# Installs what the tests need (Chromium and curl from Debian, the pinned
# Claude Code CLI from npm and schemathesis from PyPI into .tools/, the
# pinned MCP clients of crates/iris-cli/tests/clients/ from npm and PyPI), checks
# formatting and lints, runs schemathesis against a live server, then runs
# every test with nextest (or cargo test where nextest is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_CODE_VERSION=2.1.330
SCHEMATHESIS_VERSION=4.32.5

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

step "Protocol clients: the MCP SDKs and conformance suite, socket.io-client, python-socketio, playwright-core (pinned)"
clients=crates/iris-cli/tests/clients
[ -x .tools/venv/bin/python ] || python3 -m venv .tools/venv
.tools/venv/bin/pip install -q -r "$clients/requirements.txt"
# Reinstalled only when the lock file changed since the last install.
if ! cmp -s "$clients/package-lock.json" "$clients/node_modules/.installed-lock.json"; then
  npm ci --prefix "$clients" --no-audit --no-fund --loglevel=error >/dev/null
  cp "$clients/package-lock.json" "$clients/node_modules/.installed-lock.json"
fi

step "Chromium for the dashboard's browser test (Debian's package)"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
chromium --version

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "schemathesis $SCHEMATHESIS_VERSION over the OpenAPI document (a live server)"
st=.tools/venv/bin/schemathesis
if ! "$st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo build -q -p iris-cli
home=$(mktemp -d)
cat > "$home/config.yaml" <<'YAML'
api:
  port: 0
  rateLimit:
    maxRequests: 1000000000
    perIp: 1000000000/min
    messages: 1000000000/min
teams:
  demo:
    path: .
    agent: echo
YAML
IRIS_HOME="$home" target/debug/iris serve >"$home/serve.log" 2>&1 &
server=$!
for _ in $(seq 200); do [ -s "$home/.http.port" ] && break; sleep 0.05; done
port=$(cat "$home/.http.port")
key=$(sed -n 's/^IRIS_API_KEY=//p' "$home/credentials")
# Every operation: no server error, every answer as the document says,
# and the document itself valid (undeclared parameters are errors).
status=0
"$st" run "http://127.0.0.1:$port/api/v1/openapi.json" -H "Authorization: Bearer $key" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples 20 --seed 1 --no-color || status=$?
kill "$server"; wait "$server" || true
if grep -q panicked "$home/serve.log"; then echo "the server panicked:"; cat "$home/serve.log"; status=1; fi
rm -rf "$home"
[ "$status" -eq 0 ] || exit "$status"

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
