#!/usr/bin/env bash
# Start the mock providers and the steadfast instances the client checks run
# against, all on loopback, and write their addresses to $WORK/env.sh.
# Sourced by run.sh; `bash tests/clients/up.sh` alone leaves them running
# (stop them with `kill $(cat $WORK/pids)`).
#
# Mocks: a1 a2 (anthropic), o1 o2 (openai), ta (anthropic, behind a
# translating Chat route), to (openai, behind a translating Messages route).
# Their behaviour is switched per check over POST /_mock/behavior.
#
# Proxies (each logs JSON access lines to $WORK/<name>.log):
#   main       /v1/messages -> a1, a2; /v1/chat/completions, /v1/responses -> o1, o2
#   resume     the same, with retry.resume_streams: true
#   translate  /v1/messages -> to (openai, translate: true);
#              /v1/chat/completions -> ta (anthropic, translate: true)
#              (Responses clients do not translate to Anthropic providers)
#   auth       main's routes behind client_auth (tokens in CLIENT_TOKENS)
#   tools      /v1/messages -> tool_upstream.py (openai, translate: true);
#              /v1/responses -> the same (passthrough); it makes the client
#              read $WORK/tool-file.txt with a tool
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
WORK=${WORK:-$ROOT/target/clients}
BIN=${STEADFAST_BIN:-$ROOT/target/debug/steadfast}
mkdir -p "$WORK"
: > "$WORK/pids"

free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_http() { # url
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null "$1"; then return 0; fi
        sleep 0.05
    done
    echo "not answering: $1" >&2
    return 1
}

read -r -a P <<<"$(free_ports 17)"
declare -A MOCK=([a1]=${P[0]} [a2]=${P[1]} [o1]=${P[2]} [o2]=${P[3]} [ta]=${P[4]} [to]=${P[5]})
declare -A API=([a1]=anthropic [a2]=anthropic [ta]=anthropic [o1]=openai [o2]=openai [to]=openai)
for m in a1 a2 o1 o2 ta to; do
    "$BIN" mock-provider --listen "127.0.0.1:${MOCK[$m]}" --api "${API[$m]}" --name "$m" \
        >"$WORK/mock-$m.log" 2>&1 &
    echo $! >>"$WORK/pids"
done

echo "the secret word is pelican" >"$WORK/tool-file.txt"
python3 "$(dirname "${BASH_SOURCE[0]}")/tool_upstream.py" "${P[14]}" "$WORK/tool-file.txt" >"$WORK/tool-upstream.log" 2>&1 &
echo $! >>"$WORK/pids"

provider() { # name [extra keys]
    printf '  - { name: %s, api: %s, base_url: "http://127.0.0.1:%s", api_key_env: MOCK_PROVIDER_KEY%s }\n' \
        "$1" "${API[$1]}" "${MOCK[$1]}" "${2:+, $2}"
}

common() { # proxy-port admin-port name
    cat <<EOF
listen: { proxy: "127.0.0.1:$1", admin: "127.0.0.1:$2" }
server:
  threads: 2
  pid_file: "$WORK/$3.pid"
  upgrade_sock: "$WORK/$3.sock"
  drain_delay_ms: 0
  shutdown_timeout_ms: 2000
timeouts: { first_content_ms: 1000, stream_idle_ms: 5000 }
# Every check starts from healthy providers: no circuit opens, a 429's
# cooldown is over before the next check.
health: { eject_after_failures: 1000, base_ejection_ms: 1, max_ejection_ms: 1 }
logging: { format: json, access_log: all }
EOF
}

main_routes() { # [extra keys of the openai providers]
    cat <<EOF
providers:
$(provider a1)
$(provider a2)
$(provider o1 "${1:-}")
$(provider o2 "${1:-}")
routes:
  - { name: messages, paths: ["/v1/messages"], providers: [a1, a2] }
  - { name: openai, paths: ["/v1/chat/completions", "/v1/responses"], providers: [o1, o2] }
EOF
}

{ common "${P[6]}" "${P[7]}" main; main_routes; } >"$WORK/main.yaml"
{ common "${P[8]}" "${P[9]}" resume; echo "retry: { resume_streams: true }"; main_routes "prefill: true"; } >"$WORK/resume.yaml"
{
    common "${P[10]}" "${P[11]}" translate
    cat <<EOF
providers:
$(provider ta)
$(provider to)
routes:
  - { name: messages, paths: ["/v1/messages"], translate: true, providers: [to] }
  - { name: chat, paths: ["/v1/chat/completions"], translate: true, providers: [ta] }
EOF
} >"$WORK/translate.yaml"
{ common "${P[12]}" "${P[13]}" auth; echo "client_auth: { tokens_env: CLIENT_TOKENS }"; main_routes; } >"$WORK/auth.yaml"

{
    common "${P[15]}" "${P[16]}" tools
    cat <<EOF
providers:
  - { name: tool, api: openai, base_url: "http://127.0.0.1:${P[14]}", api_key_env: MOCK_PROVIDER_KEY }
routes:
  - { name: messages, paths: ["/v1/messages"], translate: true, providers: [tool] }
  - { name: responses, paths: ["/v1/responses"], providers: [tool] }
EOF
} >"$WORK/tools.yaml"

export MOCK_PROVIDER_KEY=sk-mock-provider-key-0123456789
export CLIENT_TOKENS=sf-client-token-1,sf-client-token-2
for p in main resume translate auth tools; do
    RUST_LOG=info "$BIN" serve -c "$WORK/$p.yaml" >/dev/null 2>"$WORK/$p.log" &
    echo $! >>"$WORK/pids"
done
for m in a1 a2 o1 o2 ta to; do wait_http "http://127.0.0.1:${MOCK[$m]}/_mock/stats"; done
wait_http "http://127.0.0.1:${P[14]}/"
for i in 7 9 11 13 16; do wait_http "http://127.0.0.1:${P[$i]}/ready"; done

cat >"$WORK/env.sh" <<EOF
export SF_MAIN=http://127.0.0.1:${P[6]}
export SF_RESUME=http://127.0.0.1:${P[8]}
export SF_TRANSLATE=http://127.0.0.1:${P[10]}
export SF_AUTH=http://127.0.0.1:${P[12]}
export SF_TOOLS=http://127.0.0.1:${P[15]}
export SF_LOGS=$WORK
export CLIENT_TOKENS=$CLIENT_TOKENS
export MOCK_A1=http://127.0.0.1:${MOCK[a1]}
export MOCK_A2=http://127.0.0.1:${MOCK[a2]}
export MOCK_O1=http://127.0.0.1:${MOCK[o1]}
export MOCK_O2=http://127.0.0.1:${MOCK[o2]}
export MOCK_TA=http://127.0.0.1:${MOCK[ta]}
export MOCK_TO=http://127.0.0.1:${MOCK[to]}
EOF
echo "clients env up: source $WORK/env.sh" >&2
