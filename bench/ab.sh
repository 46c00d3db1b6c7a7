#!/usr/bin/env bash
# Two steadfast builds side by side on the same machine, rounds interleaved:
# did a change make the proxy slower? bench/run.sh compares steadfast with
# its peers; this compares steadfast with itself, so that a regression is
# not lost in the machine's noise between two runs on different days.
#
#   bench/ab.sh OLD_BIN NEW_BIN          # e.g. a release build of the previous commit
#   ROUNDS=5 STREAMS=5000 bench/ab.sh ...
#
# Needs what bench/run.sh installed and built (nginx, wrk, sfbench): run
# `QUICK=1 SCENARIOS=latency PEERS=steadfast bench/run.sh` once first.
# Figures per round and build: saturated throughput and CPU per 1k requests
# (wrk -t2 -c64, non-streaming), SSE time to the first event (sfbench ttfe,
# 500 streams), then RSS per open stream (sfbench hold). Both binaries get
# the same config, which uses only keys every round-2 build knows.
set -euo pipefail
OLD=${1:?usage: bench/ab.sh OLD_BIN NEW_BIN}
NEW=${2:?usage: bench/ab.sh OLD_BIN NEW_BIN}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SF=$ROOT/target/bench/tools/release/sfbench
ROUNDS=${ROUNDS:-3} STREAMS=${STREAMS:-3000} DURATION=${DURATION:-10}
W=$(mktemp -d /tmp/steadfast-ab.XXXXXX)
export KEY=ab-key BODY=$W/json.json
[[ -x $SF ]] || { echo "no sfbench at $SF: run bench/run.sh once first" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

printf '%s' '{"model": "bench", "messages": [{"role": "user", "content": "Say hello in one short sentence."}], "max_tokens": 16}' > "$W/json.json"
printf '%s' '{"model": "bench-sse", "messages": [{"role": "user", "content": "Say hello in one short sentence."}], "max_tokens": 16, "stream": true}' > "$W/sse.json"
cat > "$W/nginx.conf" <<N
worker_processes 2; pid $W/nginx.pid; error_log $W/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  client_body_temp_path $W; proxy_temp_path $W; fastcgi_temp_path $W; uwsgi_temp_path $W; scgi_temp_path $W;
  server { listen 127.0.0.1:19000;
    location / { default_type application/json; return 200 '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'; } } }
N
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; nginx -c "$W/nginx.conf" -s stop 2>/dev/null || true; }
trap cleanup EXIT
nginx -c "$W/nginx.conf"
"$SF" upstream --listen 127.0.0.1:19010 --events 3 --event-delay-ms 5 >/dev/null 2>&1 & pids+=($!)
"$SF" upstream --listen 127.0.0.1:19011 --events 2 --event-delay-ms 3600000 >/dev/null 2>&1 & pids+=($!)

declare -A PORT=([old]=19100 [new]=19200) PID=() BIN=([old]=$OLD [new]=$NEW)
for v in old new; do
    cat > "$W/$v.yaml" <<Y
listen: { proxy: "127.0.0.1:${PORT[$v]}", admin: "127.0.0.1:$((PORT[$v] + 1))" }
server: { threads: ${PROXY_THREADS:-2}, pid_file: "$W/$v.pid", upgrade_sock: "$W/$v.sock", drain_delay_ms: 0, shutdown_timeout_ms: 1000 }
limits: { max_inflight: 20000 }
timeouts: { stream_idle_ms: 3600000, total_ms: 3600000 }
providers:
  - { name: up,   api: openai, base_url: "http://127.0.0.1:19000" }
  - { name: sse,  api: openai, base_url: "http://127.0.0.1:19010" }
  - { name: hold, api: openai, base_url: "http://127.0.0.1:19011" }
routes:
  - { name: sse,  paths: ["/sse/"],  providers: [sse] }
  - { name: hold, paths: ["/hold/"], providers: [hold] }
  - { name: chat, paths: ["/v1/chat/completions"], providers: [up] }
logging: { access_log: off }
Y
    "${BIN[$v]}" serve -c "$W/$v.yaml" >"$W/$v.log" 2>&1 & PID[$v]=$!; pids+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((PORT[$v] + 1))/ready" >/dev/null && break; sleep 0.1; done
done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
echo "old: $OLD ($("$OLD" --version 2>/dev/null || true))"
echo "new: $NEW ($("$NEW" --version 2>/dev/null || true))"
echo "idle RSS: old $(rss_kib "${PID[old]}") KiB, new $(rss_kib "${PID[new]}") KiB"
for r in $(seq "$ROUNDS"); do
    # The order alternates per round: neither build always runs second.
    order=(old new); ((r % 2 == 0)) && order=(new old)
    for v in "${order[@]}"; do
        url=http://127.0.0.1:${PORT[$v]}/v1/chat/completions
        wrk -t2 -c8 -d2s -s bench/post.lua "$url" >/dev/null
        c0=$(cpu_ticks "${PID[$v]}")
        out=$(wrk -t2 -c64 -d"${DURATION}s" -s bench/post.lua "$url")
        c1=$(cpu_ticks "${PID[$v]}")
        reqs=$(awk '/requests in/{print $1}' <<<"$out")
        rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
        tps=$(getconf CLK_TCK)
        echo "round $r $v: throughput $rps req/s, CPU $(python3 -c "print(round(($c1 - $c0) / $tps * 1e6 / $reqs, 1))") ms per 1k requests"
        ttfe=$("$SF" ttfe --addr "127.0.0.1:${PORT[$v]}" --path /sse/v1/chat/completions --body-file "$W/sse.json" \
            --n 500 --warmup 20 --header "Authorization: Bearer $KEY" --expect 'tok0 ')
        echo "round $r $v: SSE first event $(python3 -c "import json,sys; d=json.loads(sys.argv[1]); f=d['first_event_us']; print(f'p50 {f[\"p50\"]} us, p99 {f[\"p99\"]} us, ok {d[\"ok\"]}, errors {d[\"errors\"]}')" "$ttfe")"
    done
done
for v in old new; do
    r0=$(rss_kib "${PID[$v]}")
    coproc HOLD { "$SF" hold --addr "127.0.0.1:${PORT[$v]}" --path /hold/v1/chat/completions --body-file "$W/sse.json" \
        --streams "$STREAMS" --parallel 200 --timeout-s 60 --hold-s 120 --header "Authorization: Bearer $KEY"; }
    read -r line <&"${HOLD[0]}"
    sleep 1
    r1=$(rss_kib "${PID[$v]}")
    echo "$v: $line"
    echo "$v: RSS $r0 KiB before, $r1 KiB with $STREAMS open streams: $(((r1 - r0) / STREAMS)) KiB per stream"
    kill "$HOLD_PID" 2>/dev/null || true
    wait "$HOLD_PID" 2>/dev/null || true
done
