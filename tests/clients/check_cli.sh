#!/usr/bin/env bash
# Drive steadfast with the Claude Code and Codex CLIs, non-interactively and
# offline. Run by run.sh after up.sh (SF_*, MOCK_*, SF_LOGS in the
# environment); CLAUDE and CODEX name the binaries (a check is skipped when
# its binary is missing). Prints one line per check; exits 1 on a failure.
set -uo pipefail

WORK=${WORK:?}
PASS=0
FAIL=0
SKIP=0
export HOME="$WORK/home"          # Claude Code's settings and caches stay in the scratch dir
export CODEX_HOME="$WORK/codex-home"
mkdir -p "$HOME" "$CODEX_HOME"

result() { # PASS|FAIL|SKIP client feature note
    printf '%s  %-22s %-58s %s\n' "$1" "$2" "$3" "$4"
    case $1 in PASS) PASS=$((PASS + 1)) ;; FAIL) FAIL=$((FAIL + 1)) ;; *) SKIP=$((SKIP + 1)) ;; esac
}

behave() { curl -sf -o /dev/null "$1/_mock/behavior" -d "$2"; }
setup() { # [MOCK_URL BEHAVIOR]...
    for m in "$MOCK_A1" "$MOCK_A2" "$MOCK_O1" "$MOCK_O2" "$MOCK_TA" "$MOCK_TO"; do
        behave "$m" '{}'
        curl -sf -o /dev/null -X POST "$m/_mock/reset"
    done
    while [ $# -ge 2 ]; do behave "$1" "$2"; shift 2; done
}
hits() { curl -sf "$1/_mock/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }

mark() { LOG="$SF_LOGS/$1.log"; START=$(wc -c <"$LOG"); }
# The access lines written since `mark`, one per line:
# METHOD PATH STATUS CLASS PROVIDER ATTEMPTS RESUMED_FROM TRANSLATED
lines() {
    sleep 0.3
    tail -c +$((START + 1)) "$LOG" | python3 -c '
import json, sys
for l in sys.stdin:
    try:
        v = json.loads(l)
    except ValueError:
        continue
    if v.get("event") == "request":
        chain = v.get("attempt_chain") or [{}]
        print(v["method"], v["path"], v["status"], v["class"], v.get("provider") or "-",
              v["attempts"], v.get("resumed_from") or "-", chain[-1].get("translated") or "-")'
}
posts() { lines | grep -v '^HEAD '; }

claude() { # BASE_URL prompt [claude flags...]; more env in CC_ENV
    local base=$1 prompt=$2
    shift 2
    # shellcheck disable=SC2086
    (cd "$WORK" && timeout 120 env ANTHROPIC_BASE_URL="$base" ANTHROPIC_API_KEY="${KEY-sk-ant-dummy}" \
        DISABLE_TELEMETRY=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
        DISABLE_ERROR_REPORTING=1 ${CC_ENV:-} "$CLAUDE" -p "$prompt" "$@" </dev/null 2>&1)
}

codex() { # BASE_URL prompt: the final message on stdout, the transcript in $WORK/codex.err
    cat >"$CODEX_HOME/config.toml" <<EOF
model = "gpt-5"
model_provider = "steadfast"
[model_providers.steadfast]
name = "steadfast"
base_url = "$1/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
EOF
    (cd "$WORK" && timeout 120 env OPENAI_API_KEY="${KEY-sk-dummy}" "$CODEX" exec --skip-git-repo-check "$2" \
        </dev/null 2>"$WORK/codex.err")
}

# expect_one_post LINES PROVIDER ATTEMPTS: one POST, a success from PROVIDER after ATTEMPTS.
one_post() {
    local n
    n=$(printf '%s\n' "$1" | grep -c .)
    [ "$n" = 1 ] && printf '%s\n' "$1" | awk -v p="$2" -v a="$3" '$4 == "success" && $5 == p && $6 == a { ok = 1 } END { exit !ok }'
}

cc_checks() {
    local c=claude-code out l
    if [ ! -x "${CLAUDE:-}" ]; then result SKIP $c "all" "claude binary not found"; return; fi

    setup
    mark main
    out=$(claude "$SF_MAIN" "say hi")
    l=$(lines)
    if [ "$out" = "Hello from a1" ] && printf '%s\n' "$l" | grep -q '^HEAD / 200 success - 0' &&
        one_post "$(printf '%s\n' "$l" | grep -v '^HEAD ')" a1 1; then
        result PASS $c "plain (stream) + HEAD / answered locally" ok
    else result FAIL $c "plain (stream) + HEAD / answered locally" "out=$out log=$l"; fi

    for fault in '{"status":529}' '{"status":503}' '{"status":429}' '{"error_event_after":0}' '{"empty":true}' \
        '{"pings_before_content_ms":3000}'; do
        setup "$MOCK_A1" "$fault"
        mark main
        out=$(claude "$SF_MAIN" "say hi")
        l=$(posts)
        if [ "$out" = "Hello from a2" ] && one_post "$l" a2 2 && [ "$(hits "$MOCK_A1")" = 1 ]; then
            result PASS $c "a1 $fault -> failover" "one request, attempts 2"
        else result FAIL $c "a1 $fault -> failover" "out=$out log=$l"; fi
    done

    # After content the stream ends in an error event; Claude Code retries
    # on its own without streaming (the mock's faults are SSE-only, so the
    # retry succeeds): never a short answer passed off as complete.
    for fault in '{"events":5,"error_event_after":2}' '{"events":5,"cut_mid_stream_after":2}'; do
        setup "$MOCK_A1" "$fault"
        mark main
        out=$(claude "$SF_MAIN" "say hi")
        l=$(posts)
        if [ "$out" = "Hello from a1" ] && [ "$(printf '%s\n' "$l" | grep -c .)" = 2 ] &&
            printf '%s\n' "$l" | head -1 | awk '$3 == 200 && $4 != "success" { ok = 1 } END { exit !ok }' &&
            printf '%s\n' "$l" | tail -1 | grep -q ' success a1 1 '; then
            result PASS $c "a1 $fault (after content)" "error event, then Claude Code's own non-stream retry"
        else result FAIL $c "a1 $fault (after content)" "out=$out log=$l"; fi
    done

    setup "$MOCK_A1" '{"events":5,"cut_mid_stream_after":2}'
    mark resume
    out=$(claude "$SF_RESUME" "say hi")
    l=$(posts)
    if [ "$out" = "Hello from a2" ] && one_post "$l" a2 2 && printf '%s\n' "$l" | grep -q ' a1 -$'; then
        result PASS $c "cut mid-stream, resume_streams" "one message, resumed_from a1"
    else result FAIL $c "cut mid-stream, resume_streams" "out=$out log=$l"; fi

    setup
    mark translate
    out=$(claude "$SF_TRANSLATE" "say hi")
    l=$(posts)
    if [ "$out" = "Hello from to" ] && one_post "$l" to 1 && printf '%s\n' "$l" | grep -q 'anthropic->openai$'; then
        result PASS $c "translated to an openai chat provider" ok
    else result FAIL $c "translated to an openai chat provider" "out=$out log=$l"; fi

    # A whole tool turn through a translated route: the upstream asks for
    # Read, Claude Code runs it, the result goes back as a Chat tool message.
    mark tools
    out=$(claude "$SF_TOOLS" "read the file" --allowedTools Read)
    l=$(posts)
    if printf '%s' "$out" | grep -q '^TOOL SAID: .*pelican' &&
        [ "$(printf '%s\n' "$l" | grep -c ' success tool 1 ')" = 2 ] && [ "$(printf '%s\n' "$l" | grep -c .)" = 2 ]; then
        result PASS $c "translated tool turn (Read) via a Chat upstream" "2 requests, both success"
    else result FAIL $c "translated tool turn (Read) via a Chat upstream" "out=$out log=$l"; fi

    local token=${CLIENT_TOKENS%%,*}
    setup
    mark auth
    out=$(KEY=$token claude "$SF_AUTH" "say hi")
    out2=$(KEY= CC_ENV="ANTHROPIC_AUTH_TOKEN=$token" claude "$SF_AUTH" "say hi")
    if [ "$out" = "Hello from a1" ] && [ "$out2" = "Hello from a1" ]; then
        result PASS $c "client_auth: token as x-api-key / as Bearer" ok
    else result FAIL $c "client_auth: token as x-api-key / as Bearer" "out=$out out2=$out2"; fi

    mark auth
    out=$(KEY=wrong claude "$SF_AUTH" "say hi")
    l=$(posts)
    if printf '%s' "$out" | grep -qi 'api key' && [ "$(printf '%s\n' "$l" | grep -c .)" = 1 ]; then
        result PASS $c "client_auth: wrong token" "'$out' after one request"
    else result FAIL $c "client_auth: wrong token" "out=$out requests=$(printf '%s\n' "$l" | grep -c .)"; fi
}

codex_checks() {
    local c=codex out l
    if [ ! -x "${CODEX:-}" ]; then result SKIP $c "all" "codex binary not found"; return; fi

    setup
    mark main
    out=$(codex "$SF_MAIN" "say hi")
    l=$(posts)
    if [ "$out" = "Hello from o1" ] && one_post "$l" o1 1; then
        result PASS $c "plain (Responses stream)" "access log: success"
    else result FAIL $c "plain (Responses stream)" "out=$out log=$l $(tail -3 "$WORK/codex.err")"; fi

    for fault in '{"status":529}' '{"status":503}' '{"status":429}' '{"error_event_after":0}' '{"empty":true}' \
        '{"pings_before_content_ms":3000}'; do
        setup "$MOCK_O1" "$fault"
        mark main
        out=$(codex "$SF_MAIN" "say hi")
        l=$(posts)
        if [ "$out" = "Hello from o2" ] && one_post "$l" o2 2 && [ "$(hits "$MOCK_O1")" = 1 ]; then
            result PASS $c "o1 $fault -> failover" "one request, attempts 2"
        else result FAIL $c "o1 $fault -> failover" "out=$out log=$l"; fi
    done

    # After content: Codex reports the broken stream and retries it itself
    # (stream_max_retries, 5 by default); every attempt is logged as failed.
    for fault in '{"events":5,"error_event_after":2}' '{"events":5,"cut_mid_stream_after":2}'; do
        setup "$MOCK_O1" "$fault"
        mark main
        out=$(codex "$SF_MAIN" "say hi")
        l=$(posts)
        if [ -z "$out" ] && grep -q 'stream disconnected before completion' "$WORK/codex.err" &&
            ! printf '%s\n' "$l" | grep -q ' success '; then
            result PASS $c "o1 $fault (after content)" "error shown; Codex retried $(printf '%s\n' "$l" | grep -c .)x"
        else result FAIL $c "o1 $fault (after content)" "out=$out log=$l"; fi
    done

    # A whole tool turn: the upstream asks for exec_command (cat), Codex
    # runs it and sends the output back.
    mark tools
    out=$(codex "$SF_TOOLS" "read the file")
    l=$(posts)
    if printf '%s' "$out" | grep -q '^TOOL SAID: .*pelican' &&
        [ "$(printf '%s\n' "$l" | grep -c ' success tool 1 ')" = 2 ] && [ "$(printf '%s\n' "$l" | grep -c .)" = 2 ]; then
        result PASS $c "tool turn (exec_command) via a Responses upstream" "2 requests, both success"
    else result FAIL $c "tool turn (exec_command) via a Responses upstream" "out=$out log=$l"; fi

    local token=${CLIENT_TOKENS%%,*}
    setup
    mark auth
    out=$(KEY=$token codex "$SF_AUTH" "say hi")
    if [ "$out" = "Hello from o1" ]; then
        result PASS $c "client_auth: token as Bearer" ok
    else result FAIL $c "client_auth: token as Bearer" "out=$out"; fi
}

cc_checks
codex_checks
echo "$PASS passed, $FAIL failed, $SKIP skipped"
[ "$FAIL" = 0 ]
