#!/usr/bin/env bash
# The curl examples of the API documents (seeds 001 and 002), adapted to the
# `demo` team of the embedded defaults. Run against a live server:
#   IRIS_URL=http://127.0.0.1:1615 [IRIS_API_KEY=…] bash examples/curl-examples.sh
# Each call must succeed (curl --fail); the script stops at the first that does not.
set -euo pipefail
: "${IRIS_URL:=http://127.0.0.1:1615}"
auth=()
if [ -n "${IRIS_API_KEY:-}" ]; then auth=(-H "Authorization: Bearer $IRIS_API_KEY"); fi
call() { # METHOD PATH [JSON]
  local args=(-fsS -X "$1" "${auth[@]}" "$IRIS_URL$2")
  if [ $# -ge 3 ]; then args+=(-H "Content-Type: application/json" -d "$3"); fi
  echo "> $1 $2" >&2
  curl "${args[@]}"
  echo
}

# --- seed 001: the tool mirror ---------------------------------------------
call POST /api/teams/tell '{"toTeam": "demo", "message": "What is the API status?", "fromTeam": "frontend", "timeout": 30000}'
call POST /api/teams/demo/wake
call POST /api/teams/demo/sleep '{"force": false}'
call POST /api/teams/wake-all
call GET /api/teams/demo/status
call GET '/api/teams?includeProcessDetails=true'
call GET /api/status
session=$(call GET /api/teams/demo/report | sed -n 's/.*"sessionId":"\([^"]*\)".*/\1/p')
call GET "/api/cache/$session?includeMessages=true"

# --- seed 002: the programmatic API ------------------------------------------
call POST /api/v1/teams/demo/ask '{"question": "What database migration system do you use?", "timeout": 30000}'
message=$(call POST /api/v1/teams/quick-tell '{"toTeam": "demo", "message": "Run the nightly checks"}' | sed -n 's/.*"messageId":"\([^"]*\)".*/\1/p')
call GET "/api/v1/messages/$message"
call GET '/api/v1/messages/history?team=demo&limit=10&page=1'
# Streaming: the answer arrives as Server-Sent Events.
curl -fsS -N "${auth[@]}" -X POST "$IRIS_URL/api/v1/teams/demo/stream" \
  -H "Content-Type: application/json" -d '{"message": "Explain the authentication flow step by step"}'

# --- seed 003/004 -----------------------------------------------------------------
call GET /api/v1/tools
call POST /api/v1/tools/get_date/execute '{"parameters": {}}'
call POST /rpc '{"method": "get_date", "params": {}}'
call GET /healthz
call DELETE "/api/cache/$session"

# --- security (docs/security.md); needs IRIS_API_KEY of an admin key -------------
if [ -n "${IRIS_API_KEY:-}" ]; then
  call GET /api/v1/auth/me
  call POST /api/v1/admin/keys '{"name": "ci-pipeline", "scopes": ["teams:read", "tell"], "teams": ["demo"], "expiresIn": "30d", "rateLimit": "100/min"}'
  call GET /api/v1/admin/keys
  call POST /api/v1/admin/keys/ci-pipeline/rotate '{"grace": "1h"}'
  call DELETE /api/v1/admin/keys/ci-pipeline
  call POST /api/v1/admin/users '{"username": "ann", "email": "ann@example.com", "password": "Correct-Horse-42", "role": "operator"}'
  call POST /api/v1/auth/login '{"email": "ann@example.com", "password": "Correct-Horse-42"}'
  call GET '/api/v1/admin/audit-logs?action=key&limit=5'
  call GET /api/v1/admin/audit-logs/verify
fi
echo "all examples passed" >&2
