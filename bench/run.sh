#!/usr/bin/env bash
# steadfast benchmark: one command, side by side with nginx, HAProxy,
# LiteLLM and a stock Pingora proxy, everything on loopback, bounded in time.
#
#   bench/run.sh                 # full run: ~45 min on 2 cores (plus first-time installs and builds)
#   QUICK=1 bench/run.sh         # smoke run: 3 s per figure, 1 round
#   QUICK=1 PEERS=steadfast,nginx SCENARIOS=flood bench/run.sh   # one figure, two columns
#
# Peers (PEERS, comma-separated; default all):
#   steadfast, nginx, haproxy, litellm, pingora (stock Pingora, reference),
#   steadfast-glibc    the same sources built with --no-default-features
#                      (system allocator instead of jemalloc); run.sh builds
#                      it into target/bench/steadfast-glibc/steadfast
#   steadfast-nosteal  steadfast with server.work_stealing: false
#   steadfast-otel     steadfast with tracing on (telemetry.otlp_endpoint at a
#                      local sink, sample_ratio 1.0): tracing off vs on in one table
# Scenarios (SCENARIOS, comma-separated; default all, in this order):
#   throughput, latency, sse (first-event latency), cpu (CPU per 1k requests),
#   flood (RSS with FLOOD_CONNS keep-alive connections open, and after they
#     all close: does memory come back), failover, streams (RSS with STREAMS
#     open SSE streams), translate (steadfast: Anthropic client through a
#     translate: true route to an OpenAI Chat provider vs untranslated: added
#     first-event latency, CPU per event), resume (steadfast: time to the next
#     token after a stream is cut and resumed on the next provider), held
#     (steadfast: bytes of setup events held per stream before commit, computed)
#
# Knobs (environment): QUICK=1, DURATION=s per figure, ROUNDS=n, CONNS=n,
# RATE=req/s (open-loop latency), LAT_CONNS, CPU_REQUESTS, TTFE_N, STREAMS,
# STREAM_TIMEOUT_S, FO_RATE, FO_DURATION, PROXY_THREADS, WRK_THREADS,
# FLOOD_CONNS (4000; QUICK 2000), FLOOD_PARALLEL (512), FLOOD_SETTLE_S (10),
# TR_N (200; QUICK 50), TR_EVENTS (50), TR_EVENT_DELAY_MS (1),
# RESUME_N (200; QUICK 50), RESUME_CUT_AFTER (5), RESUME_EVENT_DELAY_MS (5),
# BASE_PORT (default 18000; ports BASE..BASE+80 are used),
# LITELLM_WORKERS (default PROXY_THREADS), SKIP_INSTALL=1, SKIP_BUILD=1,
# STEADFAST_BIN=path, STEADFAST_GLIBC_BIN=path (a steadfast built with
# --no-default-features; skips that build), LITELLM_VERSION, OHA_VERSION,
# UPDATE_README=1, STEADFAST_OTLP=1 (the steadfast column itself traced; the
# steadfast-otel column is the side-by-side way).
# Experiments: STEADFAST_LD_PRELOAD=libX.so (e.g. another malloc, steadfast
# only), PINGORA_WORK_STEALING=0 and PINGORA_L4_READ_BUF=N (pingora column).
# On 2 cores, work stealing has little to balance (the load generator and the
# upstreams share the cores): read steadfast-nosteal's column as indicative.
#
# Re-render the report from the last run without measuring again:
#   python3 bench/bench.py --report-only      (UPDATE_README=1 refreshes README's summary too)
#
# Installs what it needs: Debian packages (nginx, haproxy, wrk, curl)
# with apt-get, oha with cargo install, LiteLLM proxy from PyPI into a venv
# under target/bench/venv. Writes bench/RESULTS.md and raw outputs under
# bench/out/ (gitignored).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/bench/out}
export OUT
LITELLM_VERSION=${LITELLM_VERSION:-1.106.2}
OHA_VERSION=${OHA_VERSION:-1.16.0}
mkdir -p "$OUT/run" "$OUT/logs"

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# ---------------------------------------------------------------- teardown
# bench.py tears down what it started; this catches anything left if it
# was killed hard. Only the process groups bench.py recorded are signalled.
cleanup() {
    local rc=$?
    if [[ -f $OUT/run/pgids ]]; then
        while read -r pg; do
            [[ -n $pg ]] && kill -TERM -- "-$pg" 2>/dev/null || true
        done <"$OUT/run/pgids"
        sleep 1
        while read -r pg; do
            [[ -n $pg ]] && kill -KILL -- "-$pg" 2>/dev/null || true
        done <"$OUT/run/pgids"
        rm -f "$OUT/run/pgids"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
rm -f "$OUT/run/pgids"

# ---------------------------------------------------------------- install
if [[ -z ${SKIP_INSTALL:-} ]]; then
    need=()
    command -v nginx >/dev/null || need+=(nginx)
    command -v haproxy >/dev/null || need+=(haproxy)
    command -v wrk >/dev/null || need+=(wrk)
    command -v curl >/dev/null || need+=(curl)
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    if ((${#need[@]})); then
        log "apt-get install ${need[*]}"
        SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >"$OUT/logs/apt.log"
    fi
    export PATH=$HOME/.cargo/bin:$PATH
    if ! command -v oha >/dev/null; then
        log "cargo install oha (a few minutes)"
        cargo install oha --locked ${OHA_VERSION:+--version "$OHA_VERSION"} >"$OUT/logs/oha-install.log" 2>&1
    fi
    VENV=$ROOT/target/bench/venv
    if [[ ,${PEERS:-litellm}, != *,litellm,* ]]; then
        :   # LiteLLM's column not asked for: no install
    elif [[ ! -x $VENV/bin/litellm ]] || ! "$VENV/bin/python" -c "import importlib.metadata as m,sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
        log "pip install litellm[proxy]==$LITELLM_VERSION into $VENV"
        python3 -m venv "$VENV"
        if ! "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" >"$OUT/logs/litellm-install.log" 2>&1; then
            log "LiteLLM could not be installed (see $OUT/logs/litellm-install.log); its column will be n/a"
        fi
    fi
fi
export PATH=$HOME/.cargo/bin:$PATH

# ---------------------------------------------------------------- build
if [[ -z ${SKIP_BUILD:-} ]]; then
    if [[ ,${PEERS:-steadfast-glibc}, == *,steadfast-glibc,* && -z ${STEADFAST_GLIBC_BIN:-} ]]; then
        # Same target directory (dependencies are shared; only the steadfast
        # crate builds again), then set aside: the default build below puts
        # the jemalloc binary back at target/release/steadfast.
        log "cargo build --release --no-default-features (steadfast-glibc: the system allocator)"
        cargo build --release --quiet --no-default-features
        mkdir -p "$ROOT/target/bench/steadfast-glibc"
        cp target/release/steadfast "$ROOT/target/bench/steadfast-glibc/steadfast"
        if [[ -n ${STEADFAST_BIN:-} ]]; then
            log "cargo build --release (restores target/release/steadfast)"
            cargo build --release --quiet
        fi
    fi
    if [[ -z ${STEADFAST_BIN:-} ]]; then
        log "cargo build --release"
        cargo build --release --quiet
    fi
    log "building bench/tools (sfbench)"
    CARGO_TARGET_DIR=$ROOT/target/bench/tools cargo build --release --quiet --manifest-path bench/tools/Cargo.toml
    if [[ ,${PEERS:-pingora}, == *,pingora,* ]]; then
        log "building bench/pingora-baseline (reference column)"
        CARGO_TARGET_DIR=$ROOT/target/bench/pingora-baseline cargo build --release --quiet \
            --manifest-path bench/pingora-baseline/Cargo.toml
    fi
fi

# ---------------------------------------------------------------- run
# Each proxy holds two sockets per open stream: take the whole hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "open-files limit $(ulimit -n); starting bench/bench.py"
python3 bench/bench.py
