#!/usr/bin/env python3
"""Parse every translated corpus stream and answer with the official
anthropic and openai Python SDKs, offline.

The Rust test `translate::stream::tests::dump_translated_corpus` (ignored
by default) writes the translated files; this script serves each one from a
local http.server on 127.0.0.1 and lets the SDK parse it as if it came from
the vendor. Files are named `<client dialect>__<corpus file>`.

    STEADFAST_TRANSLATED_DIR=/tmp/translated \
      cargo test --lib translate::stream::tests::dump_translated_corpus -- --ignored
    pip install anthropic openai
    python3 tests/sdk/check_sdks.py /tmp/translated

Exit status 0 when every file parses and accumulates to a complete answer
(streams that carry an error must raise the SDK's error instead).
"""

import http.server
import json
import os
import sys
import threading

import anthropic
import openai

DIR = sys.argv[1] if len(sys.argv) > 1 else "target/translated"
CURRENT = {"path": None}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        path = CURRENT["path"]
        body = open(path, "rb").read()
        self.send_response(200)
        ctype = "text/event-stream" if path.endswith(".sse") else "application/json"
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    ac = anthropic.Anthropic(api_key="k", base_url=base, max_retries=0)
    oc = openai.OpenAI(api_key="k", base_url=base + "/v1", max_retries=0)
    failures = 0
    files = sorted(os.listdir(DIR))
    for name in files:
        CURRENT["path"] = os.path.join(DIR, name)
        expect_error = "error" in name or "failed" in name
        try:
            summary = check(ac, oc, name)
            if expect_error:
                raise AssertionError("an error stream parsed without an error")
            print(f"ok    {name}: {summary}")
        except (anthropic.APIError, openai.APIError) as e:
            if expect_error:
                print(f"ok    {name}: SDK raised {type(e).__name__}: {e}")
            else:
                failures += 1
                print(f"FAIL  {name}: {type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - report every failure
            failures += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
    server.shutdown()
    print(f"{len(files) - failures}/{len(files)} parsed")
    return 1 if failures or not files else 0


def check(ac, oc, name):
    msgs = [{"role": "user", "content": "x"}]
    if name.startswith("anthropic__") and name.endswith(".sse"):
        with ac.messages.stream(model="m", max_tokens=10, messages=msgs) as s:
            for _ in s:
                pass
            m = s.get_final_message()
        assert m.stop_reason is not None
        for b in m.content:
            if b.type == "tool_use":
                assert isinstance(b.input, dict), b
        return f"stop={m.stop_reason} blocks={[b.type for b in m.content]} usage=({m.usage.input_tokens},{m.usage.output_tokens},{m.usage.cache_read_input_tokens})"
    if name.startswith("anthropic__"):
        m = ac.messages.create(model="m", max_tokens=10, messages=msgs)
        return f"stop={m.stop_reason} blocks={[b.type for b in m.content]}"
    if name.endswith(".sse"):
        acc = {"text": "", "calls": {}, "finish": None, "usage": None}
        stream = oc.chat.completions.create(
            model="m", messages=msgs, stream=True, stream_options={"include_usage": True}
        )
        for chunk in stream:
            if chunk.usage:
                acc["usage"] = chunk.usage.prompt_tokens
            for ch in chunk.choices:
                acc["text"] += ch.delta.content or ""
                for tc in ch.delta.tool_calls or []:
                    c = acc["calls"].setdefault(tc.index, {"name": None, "args": ""})
                    if tc.function and tc.function.name:
                        c["name"] = tc.function.name
                    if tc.function and tc.function.arguments:
                        c["args"] += tc.function.arguments
                if ch.finish_reason:
                    acc["finish"] = ch.finish_reason
        assert acc["finish"] is not None
        for c in acc["calls"].values():
            assert isinstance(json.loads(c["args"]), dict)
        # The SDK's own accumulator, too. By design it raises for a length
        # or content-filter finish (it cannot parse structured output then),
        # after reading the whole stream: that is the finish reason arriving.
        try:
            with oc.chat.completions.stream(model="m", messages=msgs) as s:
                for _ in s:
                    pass
                final = s.get_final_completion()
            assert final.choices[0].finish_reason == acc["finish"]
        except openai.LengthFinishReasonError:
            assert acc["finish"] == "length"
        except openai.ContentFilterFinishReasonError:
            assert acc["finish"] == "content_filter"
        return f"finish={acc['finish']} calls={[c['name'] for c in acc['calls'].values()]} usage={acc['usage']}"
    r = oc.chat.completions.create(model="m", messages=msgs)
    return f"finish={r.choices[0].finish_reason} tools={len(r.choices[0].message.tool_calls or [])}"


if __name__ == "__main__":
    sys.exit(main())
