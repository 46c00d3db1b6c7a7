#!/usr/bin/env python3
"""An OpenAI Chat Completions upstream that makes the client call a tool.

The mock provider answers text only; this one streams a `Read` tool call
for the file named on its command line, then, once the request carries the
tool's result, answers "TOOL SAID: <the result's end>". It is a plain
http.server: HTTP/1.0 with a Content-Length on its streams, as some
OpenAI-compatible servers stream. Used by up.sh behind a translating
Messages route, so Claude Code runs a whole tool turn through steadfast.

    python3 tool_upstream.py PORT FILE
"""

import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        tool = [m for m in req.get("messages", []) if m.get("role") == "tool"]
        base = {"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1, "model": req.get("model")}

        def chunk(delta, finish=None):
            return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])

        if not tool:
            args = json.dumps({"file_path": sys.argv[2]})
            chunks = [
                chunk({"role": "assistant", "content": None, "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function", "function": {"name": "Read", "arguments": ""}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[:10]}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[10:]}}]}),
                chunk({}, "tool_calls"),
            ]
        else:
            said = tool[-1]["content"]
            if isinstance(said, list):
                said = "".join(p.get("text", "") for p in said)
            chunks = [chunk({"role": "assistant", "content": "TOOL SAID: "}), chunk({"content": said.strip()[-60:]}),
                      chunk({}, "stop")]
        chunks.append(dict(base, choices=[], usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}))
        if req.get("stream"):
            body = ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
        else:
            body = b'{"error":{"message":"this upstream streams only","type":"invalid_request_error"}}'
            self.send_response(400)
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
