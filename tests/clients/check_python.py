#!/usr/bin/env python3
"""Drive steadfast with the official anthropic and openai Python SDKs.

Run by tests/clients/run.sh against the mocks and proxies that up.sh
started (addresses in the environment: SF_*, MOCK_*, SF_LOGS). Each check
sets the mocks' behaviour, makes one SDK call with the SDK's default retry
policy, and looks at what the SDK returned or raised, at the response
headers, at how many requests the mocks saw, and at steadfast's access log
line. Prints one line per check; exits 1 when any check failed.
"""

import json
import os
import sys
import time
import traceback
import urllib.request

import anthropic
import openai

E = os.environ
RESULTS = []
ALL_MOCKS = ["MOCK_A1", "MOCK_A2", "MOCK_O1", "MOCK_O2", "MOCK_TA", "MOCK_TO"]


class Fail(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Fail(msg)


def post(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def setup(**behaviors):
    """Every mock back to defaults and zero counters, then `name=behavior`."""
    for m in ALL_MOCKS:
        post(E[m] + "/_mock/behavior", {})
        post(E[m] + "/_mock/reset", {})
    for m, b in behaviors.items():
        post(E["MOCK_" + m.upper()] + "/_mock/behavior", b)


def hits(m):
    return get(E["MOCK_" + m.upper()] + "/_mock/stats")["requests"]


class Log:
    """The access lines a proxy wrote after this point."""

    def __init__(self, proxy):
        self.path = os.path.join(E["SF_LOGS"], proxy + ".log")
        self.start = os.path.getsize(self.path)

    def requests(self, wait_for=None):
        deadline = time.time() + 5
        while True:
            with open(self.path, "rb") as f:
                f.seek(self.start)
                lines = f.read().decode(errors="replace").splitlines()
            out = []
            for l in lines:
                try:
                    v = json.loads(l)
                except ValueError:
                    continue
                if v.get("event") == "request":
                    out.append(v)
            if wait_for is None or any(v.get("request_id") == wait_for for v in out):
                if wait_for is None and not out and time.time() < deadline:
                    time.sleep(0.05)
                    continue
                return out
            if time.time() > deadline:
                raise Fail(f"no access line for request {wait_for}; saw {out}")
            time.sleep(0.05)

    def one(self, request_id=None):
        """The single access line of this check (a client retry would add more)."""
        lines = self.requests(request_id)
        expect(len(lines) == 1, f"expected one access line, got {len(lines)}: {lines}")
        return lines[0]


def check(client, feature):
    def wrap(f):
        def run():
            try:
                note = f() or "ok"
                RESULTS.append((client, feature, "PASS", note))
            except Fail as e:
                RESULTS.append((client, feature, "FAIL", str(e)))
            except Exception as e:  # an SDK raising where it should not
                RESULTS.append((client, feature, "FAIL", f"{type(e).__name__}: {e}"))
                traceback.print_exc()

        CHECKS.append((f"{client} {feature}", run))
        return f

    return wrap


CHECKS = []
MSG = [{"role": "user", "content": "hi"}]


def ac(base=None, **kw):
    return anthropic.Anthropic(api_key="sk-client-dummy", base_url=base or E["SF_MAIN"], **kw)


def oc(base=None, **kw):
    return openai.OpenAI(api_key="sk-client-dummy", base_url=(base or E["SF_MAIN"]) + "/v1", **kw)


def a_create(c, **kw):
    raw = c.messages.with_raw_response.create(model="m", max_tokens=64, messages=MSG, **kw)
    m = raw.parse()
    return "".join(b.text for b in m.content if b.type == "text"), raw.headers, m


def a_stream(c, **kw):
    with c.messages.stream(model="m", max_tokens=64, messages=MSG, **kw) as s:
        m = s.get_final_message()
        h = s.response.headers
    expect(m.stop_reason == "end_turn", f"stop_reason {m.stop_reason}")
    return "".join(b.text for b in m.content if b.type == "text"), h, m


def chat_create(c):
    raw = c.chat.completions.with_raw_response.create(model="m", messages=MSG)
    m = raw.parse()
    return m.choices[0].message.content, raw.headers, m


def chat_stream(c):
    with c.chat.completions.stream(model="m", messages=MSG) as s:
        m = s.get_final_completion()
        h = s._response.headers  # the helper keeps the HTTP response private
    expect(m.choices[0].finish_reason == "stop", f"finish_reason {m.choices[0].finish_reason}")
    return m.choices[0].message.content, h, m


def resp_create(c):
    raw = c.responses.with_raw_response.create(model="m", input="hi")
    r = raw.parse()
    return r.output_text, raw.headers, r


def resp_stream(c):
    with c.responses.stream(model="m", input="hi") as s:
        r = s.get_final_response()
        h = s._response.headers
    expect(r.status == "completed", f"status {r.status}")
    return r.output_text, h, r


CALLS = {
    "anthropic": (ac, {"create": a_create, "stream": a_stream}, ("a1", "a2")),
    "openai-chat": (oc, {"create": chat_create, "stream": chat_stream}, ("o1", "o2")),
    "openai-responses": (oc, {"create": resp_create, "stream": resp_stream}, ("o1", "o2")),
}


def served(call, want, provider, attempts, first=None, first_hits=1):
    """Call, and check the answer came from `provider` after `attempts`
    attempts, in one client request (no SDK retry)."""
    log = Log("main")
    text, h, _ = call()
    expect(text == want, f"text {text!r}, want {want!r}")
    expect(h.get("x-steadfast-provider") == provider, f"provider {h.get('x-steadfast-provider')}")
    expect(
        h.get("x-steadfast-attempts") == str(attempts),
        f"x-steadfast-attempts {h.get('x-steadfast-attempts')}",
    )
    line = log.one(h.get("x-request-id"))
    expect(line["class"] == "success", f"logged class {line['class']}")
    expect(line["attempts"] == attempts, f"logged attempts {line['attempts']}")
    if first:
        expect(hits(first) == first_hits, f"{first} saw {hits(first)} requests")
    return line


for dialect, (mk, calls, (p1, p2)) in CALLS.items():
    for how, call in calls.items():

        @check(f"py-{dialect}", f"plain {how}")
        def _(mk=mk, call=call, p1=p1):
            setup()
            served(lambda: call(mk()), f"Hello from {p1}", p1, 1)

        for status in (529, 503, 429):

            @check(f"py-{dialect}", f"failover {status} {how}")
            def _(mk=mk, call=call, p1=p1, p2=p2, status=status):
                setup(**{p1: {"status": status}})
                line = served(lambda: call(mk()), f"Hello from {p2}", p2, 2, first=p1)
                expect(hits(p2) == 1, f"{p2} saw {hits(p2)} requests")
                return f"attempt_chain {[a['result'] for a in line['attempt_chain']]}"

        @check(f"py-{dialect}", f"empty 200 -> failover {how}")
        def _(mk=mk, call=call, p1=p1, p2=p2):
            setup(**{p1: {"empty": True}})
            served(lambda: call(mk()), f"Hello from {p2}", p2, 2, first=p1)

    stream = calls["stream"]

    @check(f"py-{dialect}", "error event before content -> failover")
    def _(mk=mk, stream=stream, p1=p1, p2=p2):
        setup(**{p1: {"error_event_after": 0}})
        served(lambda: stream(mk()), f"Hello from {p2}", p2, 2, first=p1)

    @check(f"py-{dialect}", "pings past first_content_ms -> failover")
    def _(mk=mk, stream=stream, p1=p1, p2=p2):
        setup(**{p1: {"pings_before_content_ms": 3000}})
        served(lambda: stream(mk()), f"Hello from {p2}", p2, 2, first=p1)

    @check(f"py-{dialect}", "error event after content -> SDK error")
    def _(mk=mk, stream=stream, p1=p1):
        setup(**{p1: {"events": 5, "error_event_after": 2}})
        log = Log("main")
        try:
            text, _, _ = stream(mk())
        except (anthropic.APIError, openai.APIError, RuntimeError) as e:
            # The Responses helper raises RuntimeError("Didn't receive a
            # `response.completed` event.") after yielding the error event.
            line = log.one()
            expect(line["class"] != "success", f"logged {line['class']}")
            expect(hits(p1) == 1, f"{p1} saw {hits(p1)} requests (client retried)")
            return f"raised {type(e).__name__}: {str(e)[:80]}; logged class {line['class']}"
        raise Fail(f"no error: the SDK returned {text!r} as a complete answer")

    @check(f"py-{dialect}", "cut mid-stream, no resume -> SDK error")
    def _(mk=mk, stream=stream, p1=p1):
        setup(**{p1: {"events": 5, "cut_mid_stream_after": 2}})
        log = Log("main")
        try:
            text, _, _ = stream(mk())
        except (anthropic.APIError, openai.APIError, RuntimeError) as e:
            line = log.one()
            expect(line["class"] == "network", f"logged {line['class']}")
            return f"raised {type(e).__name__}: {str(e)[:80]}"
        raise Fail(f"no error: the SDK returned {text!r} as a complete answer")


for dialect in ("anthropic", "openai-chat"):
    mk, calls, (p1, p2) = CALLS[dialect]

    @check(f"py-{dialect}", "cut mid-stream, resume_streams -> one message")
    def _(mk=mk, calls=calls, p1=p1, p2=p2):
        setup(**{p1: {"events": 5, "cut_mid_stream_after": 2}})
        log = Log("resume")
        text, h, _ = calls["stream"](mk(E["SF_RESUME"]))
        expect(text == f"Hello from {p2}", f"text {text!r}")
        line = log.one(h.get("x-request-id"))
        expect(line["class"] == "success", f"logged {line['class']}")
        expect(line.get("resumed_from") == p1, f"resumed_from {line.get('resumed_from')}")
        expect(line["provider"] == p2, f"provider {line['provider']}")
        return f"text {text!r}"


@check("py-openai-responses", "cut mid-stream, resume_streams (not resumable) -> SDK error")
def _():
    setup(o1={"events": 5, "cut_mid_stream_after": 2})
    log = Log("resume")
    try:
        text, _, _ = resp_stream(oc(E["SF_RESUME"]))
    except (openai.APIError, RuntimeError) as e:
        line = log.one()
        expect(line["class"] == "network", f"logged {line['class']}")
        return f"raised {type(e).__name__}: {str(e)[:80]}"
    raise Fail(f"no error: the SDK returned {text!r} as a complete answer")


# Cross-dialect: an anthropic client on an OpenAI Chat provider, an openai
# Chat client on an Anthropic provider.
TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    },
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
]


def translated(line, frm, to):
    chain = line["attempt_chain"]
    expect(len(chain) == 1 and chain[0]["translated"], f"attempt_chain {chain}")
    return chain[0]["translated"]


for how in ("create", "stream"):

    @check("py-anthropic", f"translated to openai chat, {how}")
    def _(how=how):
        setup()
        log = Log("translate")
        text, h, m = CALLS["anthropic"][1][how](ac(E["SF_TRANSLATE"]))
        expect(text == "Hello from to", f"text {text!r}")
        expect(m.usage.input_tokens == 11 and m.usage.output_tokens == 7, f"usage {m.usage}")
        t = translated(log.one(h.get("x-request-id")), "anthropic", "openai")
        return f"translated {t}"

    @check("py-anthropic", f"translated, tools + tool turns, {how}")
    def _(how=how):
        setup()
        log = Log("translate")
        c = ac(E["SF_TRANSLATE"])
        args = dict(model="m", max_tokens=64, messages=TOOL_TURNS, tools=[TOOL], system="be brief")
        if how == "create":
            m = c.messages.create(**args)
        else:
            with c.messages.stream(**args) as s:
                m = s.get_final_message()
        expect(m.content[0].text == "Hello from to", f"content {m.content}")
        log.one()
        return "request with tools/tool_use/tool_result accepted; the mock answers text only"

    @check("py-openai-chat", f"translated to anthropic, {how}")
    def _(how=how):
        setup()
        log = Log("translate")
        text, h, m = CALLS["openai-chat"][1][how](oc(E["SF_TRANSLATE"]))
        expect(text == "Hello from ta", f"text {text!r}")
        t = translated(log.one(h.get("x-request-id")), "openai", "anthropic")
        return f"translated {t}"

    @check("py-openai-chat", f"translated, tools + tool turns, {how}")
    def _(how=how):
        setup()
        log = Log("translate")
        c = oc(E["SF_TRANSLATE"])
        msgs = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": TOOL["input_schema"],
                },
            }
        ]
        if how == "create":
            m = c.chat.completions.create(model="m", messages=msgs, tools=tools)
        else:
            with c.chat.completions.stream(model="m", messages=msgs, tools=tools) as s:
                m = s.get_final_completion()
        expect(m.choices[0].message.content == "Hello from ta", f"message {m.choices[0].message}")
        log.one()
        return "request with tools/tool_calls/tool message accepted; the mock answers text only"


@check("py-anthropic", "translated, provider 529 -> APIStatusError in anthropic shape")
def _():
    setup(to={"status": 529})
    try:
        ac(E["SF_TRANSLATE"], max_retries=0).messages.create(model="m", max_tokens=8, messages=MSG)
    except anthropic.APIStatusError as e:
        expect(isinstance(e.body, dict) and e.body.get("type") == "error", f"body {e.body}")
        return f"{type(e).__name__} {e.status_code} {e.body['error']['type']}"
    raise Fail("no error")


# Client auth (client_auth.tokens_env): the SDKs' own credential headers.
TOKEN = E.get("CLIENT_TOKENS", "").split(",")[0]


@check("py-anthropic", "client_auth: token as x-api-key (api_key)")
def _():
    setup()
    m = anthropic.Anthropic(api_key=TOKEN, base_url=E["SF_AUTH"]).messages.create(
        model="m", max_tokens=8, messages=MSG
    )
    expect(m.content[0].text == "Hello from a1", f"{m.content}")


@check("py-anthropic", "client_auth: token as Bearer (auth_token)")
def _():
    setup()
    m = anthropic.Anthropic(auth_token=TOKEN, base_url=E["SF_AUTH"]).messages.create(
        model="m", max_tokens=8, messages=MSG
    )
    expect(m.content[0].text == "Hello from a1", f"{m.content}")


@check("py-anthropic", "client_auth: wrong token -> AuthenticationError, no retry")
def _():
    setup()
    log = Log("auth")
    try:
        anthropic.Anthropic(api_key="wrong", base_url=E["SF_AUTH"]).messages.create(
            model="m", max_tokens=8, messages=MSG
        )
    except anthropic.AuthenticationError as e:
        expect(e.body["error"]["type"] == "authentication_error", f"{e.body}")
        log.one()
        expect(hits("a1") == 0, "a1 was contacted")
        return "401 authentication_error"
    raise Fail("no error")


@check("py-openai-chat", "client_auth: token as Bearer (api_key); wrong -> AuthenticationError")
def _():
    setup()
    m = openai.OpenAI(api_key=TOKEN, base_url=E["SF_AUTH"] + "/v1").chat.completions.create(
        model="m", messages=MSG
    )
    expect(m.choices[0].message.content == "Hello from o1", f"{m}")
    try:
        openai.OpenAI(api_key="wrong", base_url=E["SF_AUTH"] + "/v1").chat.completions.create(
            model="m", messages=MSG
        )
    except openai.AuthenticationError:
        return "ok"
    raise Fail("wrong token accepted")


def main():
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    for name, run in CHECKS:
        if only in name:
            run()
    failed = 0
    for client, feature, res, note in RESULTS:
        failed += res == "FAIL"
        print(f"{res}  {client:22} {feature:58} {note}")
    print(f"{len(RESULTS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
