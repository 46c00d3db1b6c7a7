#!/usr/bin/env bash
# Check steadfast with the real clients users point at it, offline, against
# its mock provider: the official anthropic and openai SDKs for Python and
# Node, Claude Code and the Codex CLI.
#
#     bash tests/clients/run.sh            # everything
#     bash tests/clients/run.sh python     # one of: python node cli
#     CHECK=failover bash tests/clients/run.sh python   # SDK checks whose name contains this
#
# Optional and not part of `cargo test`: it installs the clients from PyPI
# and npm (once, into target/clients/: a venv and a scratch node_modules;
# nothing system-wide) and needs python3 (3.9+), node (18+) and curl. Set
# CLIENTS_OFFLINE=1 to use what is installed there without installing.
# The binary is target/debug/steadfast (built if missing; STEADFAST_BIN
# overrides). up.sh starts six mocks, a tool-calling upstream and five proxies on free loopback ports;
# each check switches the mocks' faults over their control API, drives one
# client, and reads the access log (JSON lines in target/clients/*.log).
# Claude Code and Codex run non-interactively (`claude -p`, `codex exec`)
# with telemetry, update checks and error reporting off, in a scratch HOME
# and CODEX_HOME; a missing CLI is reported as skipped.
# Exits non-zero when any check failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export ROOT
export WORK=${CLIENTS_DIR:-$ROOT/target/clients}
export STEADFAST_BIN=${STEADFAST_BIN:-$ROOT/target/debug/steadfast}
HERE=$ROOT/tests/clients
WHAT=${1:-all}
mkdir -p "$WORK"

if [ ! -x "$STEADFAST_BIN" ]; then (cd "$ROOT" && cargo build); fi

install() {
    [ "${CLIENTS_OFFLINE:-0}" = 1 ] && return
    if [ ! -x "$WORK/venv/bin/python" ]; then python3 -m venv "$WORK/venv"; fi
    if ! "$WORK/venv/bin/python" -c 'import anthropic, openai' 2>/dev/null; then
        "$WORK/venv/bin/pip" install -q anthropic openai
    fi
    if [ ! -d "$WORK/npm/node_modules/@anthropic-ai/sdk" ] || [ ! -d "$WORK/npm/node_modules/openai" ] ||
        [ ! -e "$WORK/npm/node_modules/.bin/claude" ] || [ ! -e "$WORK/npm/node_modules/.bin/codex" ]; then
        mkdir -p "$WORK/npm"
        (cd "$WORK/npm" && { [ -f package.json ] || npm init -y >/dev/null; } &&
            npm install --no-audit --no-fund @anthropic-ai/sdk openai @anthropic-ai/claude-code @openai/codex)
    fi
}

stop() {
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/pids"
        rm -f "$WORK/pids"
    fi
}
trap stop EXIT

install
stop
bash "$HERE/up.sh"
# shellcheck disable=SC1091
source "$WORK/env.sh"

rc=0
case $WHAT in all | python)
    echo "== Python SDKs: anthropic $("$WORK/venv/bin/python" -c 'import anthropic; print(anthropic.__version__)'), openai $("$WORK/venv/bin/python" -c 'import openai; print(openai.__version__)')"
    "$WORK/venv/bin/python" "$HERE/check_python.py" "${CHECK:-}" || rc=1
    ;;
esac
case $WHAT in all | node)
    echo "== Node SDKs: @anthropic-ai/sdk $(node -p "require('$WORK/npm/node_modules/@anthropic-ai/sdk/package.json').version"), openai $(node -p "require('$WORK/npm/node_modules/openai/package.json').version")"
    NODE_PATH="$WORK/npm/node_modules" node "$HERE/check_node.mjs" "${CHECK:-}" || rc=1
    ;;
esac
case $WHAT in all | cli)
    CLAUDE=$WORK/npm/node_modules/.bin/claude
    CODEX=$WORK/npm/node_modules/.bin/codex
    echo "== CLIs: $("$CLAUDE" --version 2>/dev/null || echo 'claude: missing'), $("$CODEX" --version 2>/dev/null || echo 'codex: missing')"
    CLAUDE=$CLAUDE CODEX=$CODEX bash "$HERE/check_cli.sh" || rc=1
    ;;
esac
exit $rc
