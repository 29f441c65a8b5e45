#!/usr/bin/env bash
# Refresh the dashboard screenshots in docs/img/ (the README shows them):
# the dashboard's browser test, told to keep its screenshots there. The
# test suite writes them to a temporary folder, so it leaves the tree as
# it was. Needs what scripts/test.sh installs (Chromium, playwright-core,
# the Claude Code CLI).
#   bash scripts/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IRIS_SCREENSHOTS="$PWD/docs/img" cargo nextest run -p iris-cli --test dashboard
git status --short docs/img
