#!/usr/bin/env python3
"""The official anthropic Python SDK as a client of steadfast serving Claude
from Bedrock or Vertex (fakes on 127.0.0.1, started by the Rust test
`cloud_serve::the_anthropic_sdk_talks_to_bedrock_and_vertex_through_steadfast`,
which is ignored by default because it needs `pip install anthropic`).

    python3 tests/sdk/cloud_sdk.py BASE_URL EXPECTED_TEXT ok|throttled

`ok`: a plain call, a streamed call with the SDK's stream helper (final
message assembled from the events), and a beta call (`?beta=true`,
`anthropic-beta`) with a tool and thinking. `throttled`: the call must raise
the SDK's RateLimitError. Exit status 0 when every check holds.
"""

import sys

import anthropic

BASE, EXPECTED, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
MODEL = "claude-sonnet-4-5"
client = anthropic.Anthropic(
    base_url=BASE, api_key="sk-ant-sdk-client-key", max_retries=0, timeout=20
)
MESSAGES = [{"role": "user", "content": "Say hello."}]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


if MODE == "throttled":
    try:
        client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    except anthropic.RateLimitError as e:
        check(e.status_code == 429, f"status {e.status_code}")
        check(e.body["error"]["type"] == "rate_limit_error", f"body {e.body}")
        print("throttled: RateLimitError", e.body["error"]["message"])
        sys.exit(0)
    check(False, "no RateLimitError")

m = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
check(m.content[0].text == EXPECTED, f"create: {m.content}")
check(m.usage.input_tokens == 5 and m.usage.output_tokens == 4, f"usage {m.usage}")

with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check(text == EXPECTED, f"stream text {text!r}")
check(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason}")
check(final.usage.output_tokens == 4, f"stream usage {final.usage}")

b = client.beta.messages.create(
    model=MODEL,
    max_tokens=2048,
    betas=["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"],
    thinking={"type": "enabled", "budget_tokens": 1024},
    tools=[{
        "name": "Bash",
        "description": "Run a shell command",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
    }],
    messages=MESSAGES,
)
check(b.content[0].text == EXPECTED, f"beta: {b.content}")
print("ok:", text)
