#!/usr/bin/env python3
"""An OpenAI upstream that makes the client call a tool.

The mock provider answers text only; this one streams a tool call that
reads the file named on its command line (Chat Completions: Claude Code's
`Read`, through a translating route; Responses: Codex's `exec_command`
with `cat`), then, once the request carries the tool's result, answers
"TOOL SAID: <the result's end>". It is a plain
http.server: HTTP/1.0 with a Content-Length on its streams, as some
OpenAI-compatible servers stream. Used by up.sh behind a translating
Messages route, so Claude Code runs a whole tool turn through steadfast.

    python3 tool_upstream.py PORT FILE
"""

import http.server
import json
import sys


def responses(req):
    """Responses API: an exec_command call (Codex's shell tool), then text."""
    outputs = [i for i in req.get("input", []) if isinstance(i, dict) and i.get("type") == "function_call_output"]
    rid = "resp_tool"
    events = [{"type": "response.created", "response": {"id": rid, "object": "response", "status": "in_progress", "output": []}}]
    if not outputs:
        args = json.dumps({"cmd": f"cat {sys.argv[2]}"})
        item = {"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "call_1", "name": "exec_command", "arguments": ""}
        done = dict(item, status="completed", arguments=args)
        events += [
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": args[:10]},
            {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": args[10:]},
            {"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 0, "arguments": args},
            {"type": "response.output_item.done", "output_index": 0, "item": done},
        ]
    else:
        out = outputs[-1].get("output")
        if isinstance(out, list):
            out = "".join(p.get("text", "") for p in out)
        text = "TOOL SAID: " + " ".join(str(out).split())[-60:]
        msg = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        done = dict(msg, status="completed", content=[{"type": "output_text", "text": text, "annotations": []}])
        events += [
            {"type": "response.output_item.added", "output_index": 0, "item": msg},
            {"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0,
             "part": {"type": "output_text", "text": "", "annotations": []}},
            {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text},
            {"type": "response.output_item.done", "output_index": 0, "item": done},
        ]
    events.append({"type": "response.completed", "response": {
        "id": rid, "object": "response", "status": "completed", "output": [done],
        "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}}})
    for i, e in enumerate(events):
        e["sequence_number"] = i
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        if self.path.endswith("/responses"):
            body = responses(req)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
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
