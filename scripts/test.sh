#!/usr/bin/env bash
# The whole test suite, with its own set-up, on a fresh machine.
#   bash scripts/test.sh
# Installs what the tests need (Chromium and curl from Debian, the pinned
# Claude Code CLI from npm and schemathesis from PyPI into .tools/, the
# pinned MCP clients of crates/iris-cli/tests/clients/ from npm and PyPI), checks
# formatting and lints, runs schemathesis against a live server, then runs
# every test with nextest (or cargo test where nextest is missing).
# PostgreSQL and Redis are used where they answer on their usual loopback
# ports, else installed from Debian and started.
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_CODE_VERSION=2.1.330
CLAUDE_AGENT_ACP_VERSION=0.23.1
QWEN_CODE_VERSION=0.24.4
SCHEMATHESIS_VERSION=4.32.5

step() { printf '\n== %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)"; exit 1; }

# The suite leaves the tree as it found it (what it writes goes to
# temporary or ignored places): compared at the end.
tree_before=$(git status --porcelain 2>/dev/null || true)

step "system packages: Chromium (API page test), curl (examples), iproute2 (the docs test)"
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
command -v systemd-analyze >/dev/null || need+=(systemd)   # checks deploy/iris.service
command -v npm >/dev/null || need+=(nodejs npm)
command -v ip >/dev/null || need+=(iproute2)       # tests/docs.rs: loopback in a namespace of its own
command -v unshare >/dev/null || need+=(util-linux)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)      # tests/ownership.rs: deploy/nginx/iris.conf in front of two nodes
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

step "ACP agents (for the acp driver's real-CLI tests): Zed's Claude Agent adapter, Qwen Code"
# Pinned; both run against the suite's local model API stubs only.
acp_pkgs=("@zed-industries/claude-agent-acp@$CLAUDE_AGENT_ACP_VERSION" "@qwen-code/qwen-code@$QWEN_CODE_VERSION")
acp_have=$(node -p "try{[require('./.tools/acp/node_modules/@zed-industries/claude-agent-acp/package.json').version,require('./.tools/acp/node_modules/@qwen-code/qwen-code/package.json').version].join(' ')}catch{''}" 2>/dev/null || true)
if [ "$acp_have" != "$CLAUDE_AGENT_ACP_VERSION $QWEN_CODE_VERSION" ]; then
  mkdir -p .tools/acp
  [ -f .tools/acp/package.json ] || echo '{"private":true}' > .tools/acp/package.json
  npm install --prefix .tools/acp --no-audit --no-fund --loglevel=error "${acp_pkgs[@]}" >/dev/null
fi

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

step "PostgreSQL for the Postgres run of the suite"
# The tests run against PostgreSQL as well when IRIS_TEST_POSTGRES is set: a
# local server (Debian's packaging: pg_createcluster, pg_ctlcluster) that
# lets user postgres in over loopback TCP without a password.
pg_port=5432
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
pg_answers() {
  PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$pg_port" -U postgres -w -Atqc 'select 1' >/dev/null 2>&1
}
pg_wait() { # up to 30 s for "$@" to succeed
  local _
  for _ in $(seq 60); do "$@" && return 0; sleep 0.5; done
  return 1
}
ensure_postgres() {
  pg_answers && return 0
  if ! command -v psql >/dev/null || ! command -v pg_ctlcluster >/dev/null ||
    ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    # Its postinst creates and starts cluster "main" (unless policy-rc.d says no).
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 apt-get install -y -qq postgresql >/dev/null
  fi
  local ver='' name='' status=''
  read -r ver name status < <(pg_lsclusters -h | awk -v p="$pg_port" '$3 == p {print $1, $2, $4}') || true
  if [ -n "$ver" ]; then
    case $status in online*) ;; *) as_root pg_ctlcluster "$ver" "$name" start ;; esac
  else
    if pg_isready -q -h 127.0.0.1 -p "$pg_port"; then
      echo "a server that is no Debian cluster holds port $pg_port and wants a password for user postgres"
      exit 1
    fi
    ver=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | cut -d/ -f5 | sort -V | tail -n1)
    name=main
    [ ! -e "/etc/postgresql/$ver/main" ] || name=iris
    as_root pg_createcluster "$ver" "$name" -p "$pg_port" --locale C.UTF-8 --start -- \
      --auth-local=trust --auth-host=trust >/dev/null
  fi
  pg_wait pg_isready -q -h 127.0.0.1 -p "$pg_port" ||
    { echo "PostgreSQL $ver/$name does not answer on port $pg_port"; exit 1; }
  if ! pg_answers; then
    # Loopback TCP as user postgres: trust, ahead of every other line (the
    # first line that matches decides).
    local hba=/etc/postgresql/$ver/$name/pg_hba.conf
    if ! as_root grep -Eq '^host[[:space:]]+all[[:space:]]+postgres[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
      as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    fi
    as_root pg_ctlcluster "$ver" "$name" reload
  fi
  pg_wait pg_answers ||
    { echo "PostgreSQL $ver/$name on port $pg_port still wants a password for user postgres"; exit 1; }
}
ensure_postgres
pg_url="postgres://postgres@127.0.0.1:$pg_port/postgres"
psql -h 127.0.0.1 -p "$pg_port" -U postgres -w -Atc 'show server_version'
# Test databases (iris_t_*) a killed run left, and the template they are
# cloned from (made again from this checkout's migrations).
pg_clean() {
  psql -h 127.0.0.1 -p "$pg_port" -U postgres -w -Atqc \
    "select datname from pg_database where datname like 'iris\_t\_%' or datname = 'iris_test_template'" |
    while read -r db; do
      psql -h 127.0.0.1 -p "$pg_port" -U postgres -w -qc "drop database if exists \"$db\" with (force)" >/dev/null
    done
}

step "Redis for the cluster tests"
# The cluster tests run several nodes on one Redis: a Redis answering on
# 127.0.0.1:6379 is used, else Debian's redis-server is installed and
# started there (it keeps nothing on disk). The outage test starts a
# redis-server of its own on a free port, so the binary must be here.
redis_port=6379
redis_answers() { [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]; }
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if ! redis_answers; then
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
  pg_wait redis_answers || { echo "Redis does not answer on 127.0.0.1:$redis_port (one that wants a password is not used)"; exit 1; }
fi
export IRIS_TEST_REDIS="redis://127.0.0.1:$redis_port"
redis-cli -h 127.0.0.1 -p "$redis_port" info server | grep -m1 redis_version

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo install, as docs/install.md says (a debug build into a temporary root)"
# The release build the docs name takes minutes; the same command with
# --debug reuses this checkout's debug build.
root=$(mktemp -d)
cargo install -q --path crates/iris-cli --locked --debug --root "$root" --target-dir target
"$root/bin/iris" --version
rm -rf "$root"

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
# and the document itself valid (undeclared parameters are errors). In
# three runs, so that no operation only ever sees 401/403:
# 1. everything with the admin key, but what could end that key
#    (revoking, rotating it) and what only a signed-in user may do;
# 2. revoking and rotating keys, with a key of their own (never the first);
# 3. the signed-in user's own operations (MFA set-up, sign out
#    everywhere), with a user's access token each.
status=0
sthesis() { # base args for one run; the rest is added by the caller
  "$st" run "http://127.0.0.1:$port/api/v1/openapi.json" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples 20 --seed 1 --no-color "$@"
}
keys='^/api/v1/admin/keys/\{id\}'
own='^/api/v1/auth/(logout-all|mfa/setup)$'
# (one regex: a second --exclude-path-regex replaces the first)
sthesis -H "Authorization: Bearer $key" --exclude-path-regex "($keys)|($own)" || status=$?
second=$(IRIS_HOME="$home" target/debug/iris key create --name schemathesis --role admin 2>/dev/null)
sthesis -H "Authorization: Bearer $second" --include-path-regex "$keys" || status=$?
IRIS_HOME="$home" target/debug/iris user create --username fuzzer --password 'Tr0ub4dor-Horse-9' --role admin >/dev/null
signed_in() {
  curl -s -X POST "http://127.0.0.1:$port/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"username":"fuzzer","password":"Tr0ub4dor-Horse-9"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])'
}
# Each with a sign-in of its own: logout-all ends the one it runs with.
sthesis -H "Authorization: Bearer $(signed_in)" --include-path-regex '^/api/v1/auth/mfa/setup$' || status=$?
sthesis -H "Authorization: Bearer $(signed_in)" --include-path-regex '^/api/v1/auth/logout-all$' || status=$?
# Left as warnings, and expected: "missing test data" (generated ids name
# teams, jobs, users that do not exist: 404 is the right answer) and "no
# links point to" (the document declares no OpenAPI links).
kill "$server"; wait "$server" || true
if grep -q panicked "$home/serve.log"; then echo "the server panicked:"; cat "$home/serve.log"; status=1; fi
rm -rf "$home"
[ "$status" -eq 0 ] || exit "$status"

# The whole suite runs once per database mode: the embedded SQLite, and
# Postgres (IRIS_TEST_POSTGRES: each test its own database). IRIS_TEST_MODES
# picks one ("sqlite" or "postgres") for a quicker local run.
run_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
  else
    cargo test --workspace --no-fail-fast
  fi
}
status=0
for mode in ${IRIS_TEST_MODES:-sqlite postgres}; do
  case $mode in
    sqlite)
      step "tests on SQLite (the embedded default)"
      IRIS_TEST_POSTGRES='' run_tests || status=1
      ;;
    postgres)
      step "tests on Postgres ($pg_url)"
      pg_clean
      IRIS_TEST_POSTGRES="$pg_url" run_tests || status=1
      pg_clean
      ;;
    *) echo "unknown IRIS_TEST_MODES entry: $mode (sqlite, postgres)"; exit 1 ;;
  esac
done
step "the tree after the run"
tree_after=$(git status --porcelain 2>/dev/null || true)
if [ "$tree_before" != "$tree_after" ]; then
  echo "the test run changed the working tree:"
  diff <(printf '%s\n' "$tree_before") <(printf '%s\n' "$tree_after") || true
  status=1
else
  echo "unchanged"
fi
exit "$status"
