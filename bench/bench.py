#!/usr/bin/env python3
"""steadfast benchmark orchestrator (started by bench/run.sh).

Starts a fast upstream and every peer on loopback ports, runs each scenario
against every peer in turn (the order rotates per round), tears everything
down, and writes bench/RESULTS.md plus raw outputs under bench/out/.

Peers ("direct" is the load generator straight to the upstream):
  steadfast, nginx (reverse proxy), haproxy, litellm (LiteLLM proxy),
  pingora (a stock Pingora proxy, for reference), and steadfast variants
  for side-by-side costs: steadfast-glibc (built without jemalloc),
  steadfast-nosteal (server.work_stealing: false), steadfast-otel
  (tracing on, every request exported to a local OTLP sink).

Nothing here asserts a timing: it measures and reports.
"""

import atexit
import datetime
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.environ.get("OUT", os.path.join(HERE, "out"))
# bench/RESULTS.md for a run into bench/out; a run elsewhere (OUT=...) keeps its report there.
RESULTS = os.environ.get("RESULTS") or (os.path.join(HERE, "RESULTS.md")
                                        if os.path.abspath(OUT) == os.path.join(HERE, "out")
                                        else os.path.join(OUT, "RESULTS.md"))
RUN = os.path.join(OUT, "run")
RAW = os.path.join(OUT, "raw")
CONF = os.path.join(OUT, "conf")
LOGS = os.path.join(OUT, "logs")
BODIES = os.path.join(OUT, "bodies")


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


QUICK = os.environ.get("QUICK", "") not in ("", "0")
K = {
    "DURATION": env_int("DURATION", 3 if QUICK else 15),        # s per throughput / latency figure
    "ROUNDS": env_int("ROUNDS", 1 if QUICK else 3),             # alternating rounds; the median is reported
    "CONNS": env_int("CONNS", 32 if QUICK else 64),             # closed-loop connections
    "RATE": env_int("RATE", 1000),                              # open-loop rate (req/s) for added latency
    "LAT_CONNS": env_int("LAT_CONNS", 64),                      # oha -c for the open-loop run
    "CPU_REQUESTS": env_int("CPU_REQUESTS", 20000 if QUICK else 50000),
    "TTFE_N": env_int("TTFE_N", 100 if QUICK else 500),         # SSE requests per peer per round
    "SSE_EVENTS": env_int("SSE_EVENTS", 3),
    "SSE_EVENT_DELAY_MS": env_int("SSE_EVENT_DELAY_MS", 5),
    "STREAMS": env_int("STREAMS", 10000),                       # concurrent open SSE streams for RSS
    "STREAM_TIMEOUT_S": env_int("STREAM_TIMEOUT_S", 180),       # LiteLLM needs ~1-2 min for 10k
    "FO_RATE": env_int("FO_RATE", 100),
    "FO_DURATION": env_int("FO_DURATION", 3 if QUICK else 10),
    "FLOOD_CONNS": env_int("FLOOD_CONNS", 2000 if QUICK else 4000),   # keep-alive connections, one request each
    "FLOOD_PARALLEL": env_int("FLOOD_PARALLEL", 512),           # of them connecting / in flight at a time
    "FLOOD_SETTLE_S": env_int("FLOOD_SETTLE_S", 10),            # longest wait for RSS to come back after the close
    "TR_N": env_int("TR_N", 50 if QUICK else 200),              # translated / plain streams per round
    "TR_EVENTS": env_int("TR_EVENTS", 50),                      # chunks per stream for the translation figure
    "TR_EVENT_DELAY_MS": env_int("TR_EVENT_DELAY_MS", 1),
    "RESUME_N": env_int("RESUME_N", 50 if QUICK else 200),      # cut-and-resumed streams per round
    "RESUME_CUT_AFTER": env_int("RESUME_CUT_AFTER", 5),         # content events before the cut
    "RESUME_EVENT_DELAY_MS": env_int("RESUME_EVENT_DELAY_MS", 5),
    "BASE_PORT": env_int("BASE_PORT", 18000),
    "WRK_THREADS": env_int("WRK_THREADS", 2),
    "PROXY_THREADS": env_int("PROXY_THREADS", 2),               # threads / workers for every peer
}
K["LITELLM_WORKERS"] = env_int("LITELLM_WORKERS", K["PROXY_THREADS"])   # uvicorn worker processes
# The other proxies, compared with steadfast.
MAIN_PEERS = ["steadfast", "nginx", "haproxy", "litellm", "pingora"]
# steadfast itself built or configured otherwise, each its own process and
# column: what the allocator, Pingora's work stealing and tracing cost.
VARIANTS = ["steadfast-glibc", "steadfast-nosteal", "steadfast-otel"]
ALL_PEERS = MAIN_PEERS + VARIANTS
STEADFASTS = ["steadfast"] + VARIANTS
DISPLAY = {"pingora": "pingora (baseline)"}
# "pingora" is a reference, not a competitor: Pingora's stock proxy with no
# logic of its own (bench/pingora-baseline), the floor steadfast is built on.
PEERS = [p for p in os.environ.get("PEERS", ",".join(ALL_PEERS)).split(",") if p]
for p in PEERS:
    if p not in ALL_PEERS:
        sys.exit(f"unknown peer {p!r}; known: {', '.join(ALL_PEERS)}")
ALL_SCENARIOS = ["throughput", "latency", "sse", "cpu", "flood", "failover", "streams", "translate", "resume",
                 "held"]
SCENARIOS = [x for x in os.environ.get("SCENARIOS", ",".join(ALL_SCENARIOS)).split(",") if x]
for x in SCENARIOS:
    if x not in ALL_SCENARIOS:
        sys.exit(f"unknown scenario {x!r}; known: {', '.join(ALL_SCENARIOS)}")

STEADFAST = os.environ.get("STEADFAST_BIN", os.path.join(ROOT, "target/release/steadfast"))
# The same sources built with --no-default-features (no jemalloc; bench/run.sh builds it).
STEADFAST_GLIBC = os.environ.get("STEADFAST_GLIBC_BIN", os.path.join(ROOT, "target/bench/steadfast-glibc/steadfast"))
SFBENCH = os.environ.get("SFBENCH_BIN", os.path.join(ROOT, "target/bench/tools/release/sfbench"))
PINGORA = os.environ.get("PINGORA_BIN", os.path.join(ROOT, "target/bench/pingora-baseline/release/pingora-baseline"))
VENV = os.environ.get("BENCH_VENV", os.path.join(ROOT, "target/bench/venv"))

B = K["BASE_PORT"]
PORT = {
    "up": B,            # nginx upstream: canned chat completion JSON
    "up429": B + 1,     # nginx upstream: 429
    "tr_up": B + 2,     # sfbench upstream: long streams for the translation figure
    "cut": B + 3,       # sfbench upstream: cuts every stream mid-text (resumption figure)
    "cont": B + 4,      # sfbench upstream: answers the continuation (resumption figure)
    "otlp": B + 5,      # sfbench otlp-sink (steadfast-otel, or STEADFAST_OTLP=1)
    "dead": B + 9,      # nothing listens here: connection refused
    "sse": B + 10,      # sfbench upstream: SSE, first event at once
    # steadfast and its variants: proxy port, admin port one above
    "steadfast": B + 20,
    "steadfast-glibc": B + 22,
    "steadfast-nosteal": B + 24,
    "steadfast-otel": B + 26,
    "steadfast-resume": B + 28,   # the resumption scenario's own instance
    "nginx": B + 30,
    "haproxy": B + 40,
    "litellm": B + 50,
    "pingora": B + 60,
}
ADMIN_PORT = {name: PORT[name] + 1 for name in STEADFASTS + ["steadfast-resume"]}
PORT["steadfast_admin"] = ADMIN_PORT["steadfast"]
# B+70..: sfbench upstream holding streams, one port per peer
HOLD_PORT = {name: B + 70 + i for i, name in enumerate(["direct"] + ALL_PEERS)}

# Clients send it to every peer; LiteLLM requires a master key to start.
KEY = "sk-bench-4f3c9a1e7b2d48a6b0c5e9f1a2d3c4b5"

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# ------------------------------------------------------------------ processes

PROCS = []
COMMANDS = []   # (scenario, command) for RESULTS.md


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def spawn(name, argv, env=None, stdin=None):
    logf = open(os.path.join(LOGS, f"{name}.log"), "ab")
    p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=stdin or subprocess.DEVNULL,
                         start_new_session=True, env=env, cwd=RUN)
    PROCS.append((name, p))
    with open(os.path.join(RUN, "pgids"), "a") as f:
        f.write(f"{p.pid}\n")
    return p


def stop(name, p, grace=5.0):
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(5)


def teardown():
    while PROCS:
        name, p = PROCS.pop()
        stop(name, p)


atexit.register(teardown)


def on_signal(signum, _frame):
    log(f"signal {signum}: tearing down")
    sys.exit(128 + signum)


for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_s, on_signal)


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port, p, name, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if p.poll() is not None:
            raise SystemExit(f"{name} exited with {p.returncode}; see {LOGS}/{name}.log")
        if port_open(port):
            return
        time.sleep(0.1)
    raise SystemExit(f"{name} did not listen on {port} within {timeout}s; see {LOGS}/{name}.log")


def run(argv, scenario, timeout, env=None, record=True):
    """Run a load generator to completion; return stdout."""
    if record:
        COMMANDS.append((scenario, " ".join(shlex.quote(a) for a in argv)))
    with open(os.path.join(LOGS, "commands.log"), "a") as f:
        f.write(" ".join(shlex.quote(a) for a in argv) + "\n")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        log(f"command failed ({r.returncode}): {' '.join(argv)}\n{r.stderr[-2000:]}")
    return r.stdout + ("\n" + r.stderr if r.returncode != 0 else "")


def save(name, text):
    with open(os.path.join(RAW, name), "w") as f:
        f.write(text)


# ------------------------------------------------------------------ /proc


def tree(pid):
    """pid and all its descendants."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        x = todo.pop()
        out.append(x)
        todo.extend(kids.get(x, []))
    return out


def rss_bytes(pid):
    total = 0
    for x in tree(pid):
        try:
            with open(f"/proc/{x}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def pss_bytes(pid):
    """Proportional set size: shared pages split between the processes sharing them."""
    total = 0
    for x in tree(pid):
        try:
            with open(f"/proc/{x}/smaps_rollup") as f:
                for l in f:
                    if l.startswith("Pss:"):
                        total += int(l.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def open_fds(pid):
    """Open file descriptors over the process tree (listeners, pooled upstream connections, ...)."""
    total = 0
    for x in tree(pid):
        try:
            total += len(os.listdir(f"/proc/{x}/fd"))
        except OSError:
            pass
    return total


def cpu_seconds(pid):
    total = 0
    for x in tree(pid):
        try:
            with open(f"/proc/{x}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])   # utime + stime
        except OSError:
            pass
    return total / CLK_TCK


# ------------------------------------------------------------------ configs

CANNED = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
}, separators=(",", ":"))
RATE_LIMITED = json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit_error",
                                     "code": "rate_limit_exceeded"}}, separators=(",", ":"))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def nofile():
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def upstream_nginx_conf():
    d = os.path.join(RUN, "nginx-up")
    os.makedirs(d, exist_ok=True)
    return write(os.path.join(CONF, "nginx-upstream.conf"), f"""
worker_processes 2;
worker_rlimit_nofile {nofile()};
pid {d}/nginx.pid;
error_log {LOGS}/nginx-upstream.error.log warn;
events {{ worker_connections {nofile() - 100}; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_buffer_size 64k;
  server {{
    listen 127.0.0.1:{PORT['up']} backlog=4096;
    location / {{ default_type application/json; return 200 '{CANNED}'; }}
  }}
  server {{
    listen 127.0.0.1:{PORT['up429']} backlog=4096;
    access_log {LOGS}/upstream-429.access.log;
    location / {{ default_type application/json; return 429 '{RATE_LIMITED}'; }}
  }}
}}
""")


# STEADFAST_OTLP=1: the steadfast column records and exports a trace of
# every request (sample_ratio 1.0) to a local OTLP/gRPC sink. The
# steadfast-otel column does the same side by side with an untraced one.
OTLP = os.environ.get("STEADFAST_OTLP", "") not in ("", "0")
# The translated provider's key (a translated provider needs its own);
# sfbench upstream ignores it.
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"


def traced(name):
    return name == "steadfast-otel" or (name == "steadfast" and OTLP)


def steadfast_conf(name):
    """The config of steadfast or one of its variants (same routes, own ports and files)."""
    threads = K["PROXY_THREADS"]
    telemetry = (f'telemetry: {{ otlp_endpoint: "http://127.0.0.1:{PORT["otlp"]}", sample_ratio: 1.0 }}'
                 if traced(name) else "")
    stealing = ", work_stealing: false" if name == "steadfast-nosteal" else ""
    resume = name == "steadfast-resume"
    hold = HOLD_PORT.get(name, HOLD_PORT["steadfast"])
    return write(os.path.join(CONF, f"{name}.yaml"), f"""
listen: {{ proxy: "127.0.0.1:{PORT[name]}", admin: "127.0.0.1:{ADMIN_PORT[name]}" }}
server: {{ threads: {threads}{stealing}, pid_file: "{RUN}/{name}.pid", upgrade_sock: "{RUN}/{name}.sock", drain_delay_ms: 0, shutdown_timeout_ms: 1000 }}
limits: {{ max_inflight: 20000, queue_timeout_ms: 5000 }}
timeouts: {{ stream_idle_ms: 3600000, total_ms: 3600000 }}
# resume_streams keeps each stream's request body and tracks its text, so
# only the resumption scenario's own instance has it on.
retry: {{ max_attempts: 3{", resume_streams: true" if resume else ""} }}
# Failover figures measure the cost of one failover per request, so passive
# ejection is effectively off (as nginx max_fails=0, haproxy without checks),
# and a 429 cooldown without Retry-After lasts 1 ms.
health: {{ eject_after_failures: 1000000000, base_ejection_ms: 1, max_ejection_ms: 1 }}
providers:
  - {{ name: up,   api: openai, base_url: "http://127.0.0.1:{PORT['up']}" }}
  - {{ name: sse,  api: openai, base_url: "http://127.0.0.1:{PORT['sse']}" }}
  - {{ name: hold, api: openai, base_url: "http://127.0.0.1:{hold}" }}
  - {{ name: dead, api: openai, base_url: "http://127.0.0.1:{PORT['dead']}" }}
  - {{ name: r429, api: openai, base_url: "http://127.0.0.1:{PORT['up429']}" }}
  - {{ name: tr,   api: openai, base_url: "http://127.0.0.1:{PORT['tr_up']}", api_key_env: {UPSTREAM_KEY_ENV} }}
  - {{ name: cut,  api: openai, base_url: "http://127.0.0.1:{PORT['cut']}" }}
  # prefill: auto assumes only Anthropic providers take an assistant prefill.
  - {{ name: cont, api: openai, base_url: "http://127.0.0.1:{PORT['cont']}", prefill: true }}
routes:
  - {{ name: sse,     paths: ["/sse/"],     providers: [sse] }}
  - {{ name: hold,    paths: ["/hold/"],    providers: [hold] }}
  - {{ name: fo-dead, paths: ["/fo-dead/"], strategy: priority, providers: [dead, up] }}
  - {{ name: fo-429,  paths: ["/fo-429/"],  strategy: priority, providers: [r429, up] }}
  # The same OpenAI Chat provider, for Anthropic clients (translated) and
  # for OpenAI clients (passed through).
  - {{ name: tr,       paths: ["/tr/v1/messages"], translate: true, providers: [tr] }}
  - {{ name: tr-plain, paths: ["/tr-plain/"],      providers: [tr] }}
  - {{ name: resume,   paths: ["/resume/"], strategy: priority, providers: [cut, cont] }}
  - {{ name: chat,    paths: ["/v1/chat/completions"], strategy: priority, providers: [up] }}
logging: {{ access_log: off }}
{telemetry}
""")


def nginx_proxy_conf(variant="", port=None, connections=None):
    d = os.path.join(RUN, "nginx-proxy" + variant)
    os.makedirs(d, exist_ok=True)
    n = nofile()
    port = port or PORT["nginx"]
    wc = connections or n - 100
    return write(os.path.join(CONF, f"nginx-proxy{variant}.conf"), f"""
worker_processes {K['PROXY_THREADS']};
worker_rlimit_nofile {n};
pid {d}/nginx.pid;
error_log {LOGS}/nginx-proxy{variant}.error.log error;
events {{ worker_connections {wc}; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_buffer_size 64k;

  # Pooled upstream connections (HTTP/1.1 keepalive to the upstream).
  upstream up      {{ server 127.0.0.1:{PORT['up']}; keepalive 256; keepalive_requests 10000000; }}
  upstream sse     {{ server 127.0.0.1:{PORT['sse']}; keepalive 64; }}
  upstream hold    {{ server 127.0.0.1:{HOLD_PORT['nginx']}; keepalive 64; }}
  # Priority failover: the second server is a backup, tried when the first
  # fails; max_fails=0 keeps the first one in use (per-request failover cost).
  upstream fo_dead {{ server 127.0.0.1:{PORT['dead']} max_fails=0; server 127.0.0.1:{PORT['up']} max_fails=0 backup; keepalive 64; }}
  upstream fo_429  {{ server 127.0.0.1:{PORT['up429']} max_fails=0; server 127.0.0.1:{PORT['up']} max_fails=0 backup; keepalive 64; }}

  server {{
    listen 127.0.0.1:{port} backlog=4096 reuseport;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;                 # SSE passes through as it arrives
    proxy_read_timeout 3600s;
    # No 401 in nginx's list; POST needs non_idempotent to be retried after it was sent.
    proxy_next_upstream error timeout http_429 http_500 http_502 http_503 http_504 http_403 non_idempotent;
    proxy_next_upstream_tries 3;
    location /sse/     {{ proxy_pass http://sse; }}
    location /hold/    {{ proxy_pass http://hold; }}
    location /fo-dead/ {{ proxy_pass http://fo_dead; }}
    location /fo-429/  {{ proxy_pass http://fo_429; }}
    location /         {{ proxy_pass http://up; }}
  }}
}}
""")


def haproxy_conf():
    maxconn = max(1000, (nofile() - 200) // 2)
    return write(os.path.join(CONF, "haproxy.cfg"), f"""
global
  maxconn {maxconn}
  nbthread {K['PROXY_THREADS']}
  pidfile {RUN}/haproxy.pid

defaults
  mode http
  timeout connect 5s
  timeout client 3600s
  timeout server 3600s
  timeout http-keep-alive 300s
  maxconn {maxconn}
  http-reuse always
  # Priority failover: 'balance first' + redispatch on every retry.
  retries 2
  option redispatch 1
  # HAProxy 2.6 cannot retry on 429 (retry-on accepts 401 403 404 408 425 500-504 only).
  retry-on conn-failure empty-response response-timeout 503 502 500 504 403 401

frontend fe
  bind 127.0.0.1:{PORT['haproxy']}
  use_backend sse     if {{ path_beg /sse/ }}
  use_backend hold    if {{ path_beg /hold/ }}
  use_backend fo_dead if {{ path_beg /fo-dead/ }}
  use_backend fo_429  if {{ path_beg /fo-429/ }}
  default_backend up

backend up
  server u1 127.0.0.1:{PORT['up']}
# Without http-no-delay HAProxy sends body data with MSG_MORE and the kernel
# holds small SSE events back until the stream ends: set it for streams.
backend sse
  option http-no-delay
  server s1 127.0.0.1:{PORT['sse']}
backend hold
  option http-no-delay
  server h1 127.0.0.1:{HOLD_PORT['haproxy']}
backend fo_dead
  balance first
  server dead 127.0.0.1:{PORT['dead']}
  server u1 127.0.0.1:{PORT['up']}
backend fo_429
  balance first
  server r429 127.0.0.1:{PORT['up429']}
  server u1 127.0.0.1:{PORT['up']}
""")


def litellm_conf():
    def dep(name, port):
        return (f"  - model_name: {name}\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
                f"      api_base: http://127.0.0.1:{port}/v1\n      api_key: sk-bench\n")
    models = (dep("bench", PORT["up"]) + dep("bench-sse", PORT["sse"]) + dep("bench-hold", HOLD_PORT["litellm"])
              + dep("bench-fo-dead", PORT["dead"]) + dep("bench-fo-429", PORT["up429"]))
    return write(os.path.join(CONF, "litellm.yaml"), f"""model_list:
{models}
litellm_settings:
  drop_params: true
  set_verbose: false
  turn_off_message_logging: true
  request_timeout: 3600
router_settings:
  num_retries: 0
  # LiteLLM's failover is a fallback to another model group.
  fallbacks: [{{"bench-fo-dead": ["bench"]}}, {{"bench-fo-429": ["bench"]}}]
general_settings:
  master_key: {KEY}
  disable_spend_logs: true
  disable_error_logs: true
""")


def write_bodies():
    os.makedirs(BODIES, exist_ok=True)
    msgs = [{"role": "user", "content": "Say hello in one short sentence."}]
    for kind, model, stream in [("json", "bench", False), ("sse", "bench-sse", True), ("hold", "bench-hold", True),
                                ("fo_dead", "bench-fo-dead", False), ("fo_429", "bench-fo-429", False)]:
        body = {"model": model, "messages": msgs, "max_tokens": 16}
        if stream:
            body["stream"] = True
        write(os.path.join(BODIES, f"{kind}.json"), json.dumps(body))
    # An Anthropic Messages client (translated route), an OpenAI client on
    # the same provider untranslated, and the resumption route's.
    write(os.path.join(BODIES, "tr.json"), json.dumps({"model": "bench-tr", "max_tokens": 64, "stream": True,
                                                       "messages": msgs}))
    for kind in ("tr_plain", "resume"):
        write(os.path.join(BODIES, f"{kind}.json"), json.dumps({"model": "bench", "messages": msgs,
                                                                "max_tokens": 64, "stream": True}))


# ------------------------------------------------------------------ peers

PREFIX = {"json": "", "sse": "/sse", "hold": "/hold", "fo_dead": "/fo-dead", "fo_429": "/fo-429",
          "tr_plain": "/tr-plain", "resume": "/resume"}


class Peer:
    def __init__(self, name, port, proc=None):
        self.name, self.port, self.proc = name, port, proc

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def path(self, kind):
        if kind == "tr":
            return "/tr/v1/messages"
        if self.name in ("litellm", "direct"):
            return "/v1/chat/completions"
        return PREFIX[kind] + "/v1/chat/completions"

    def addr(self, kind):
        if self.name == "direct":
            port = {"json": PORT["up"], "sse": PORT["sse"], "hold": HOLD_PORT["direct"]}[kind]
        else:
            port = self.port
        return f"127.0.0.1:{port}"

    def url(self, kind):
        return f"http://{self.addr(kind)}{self.path(kind)}"

    def supports(self, kind):
        if kind in ("tr", "tr_plain", "resume"):
            return self.name in STEADFASTS
        return not (self.name in ("direct", "pingora") and kind in ("fo_dead", "fo_429"))


def allocator(path):
    """Which allocator a steadfast binary carries: jemalloc exports its options symbol."""
    try:
        with open(path, "rb") as f:
            return "jemalloc" if b"_rjem_malloc_conf" in f.read() else "system malloc"
    except OSError:
        return "?"


def steadfast_bin(name):
    return STEADFAST_GLIBC if name == "steadfast-glibc" else STEADFAST


def start_steadfast(name):
    """Start steadfast or a variant; None (and a note) when its binary is missing or wrong."""
    binary = steadfast_bin(name)
    if not os.path.exists(binary):
        NOTES.append(f"{name}: binary {binary} missing (bench/run.sh builds it); its column is n/a.")
        return None
    if name == "steadfast-glibc" and allocator(binary) != "system malloc":
        NOTES.append(f"{name}: {binary} carries jemalloc (not built with --no-default-features); its column is n/a.")
        return None
    argv = [binary, "serve", "-c", steadfast_conf(name)]
    env = dict(os.environ, RUST_LOG="warn", **{UPSTREAM_KEY_ENV: "sk-bench-upstream"})
    if name == "steadfast" and os.environ.get("STEADFAST_LD_PRELOAD"):   # e.g. another malloc, for experiments
        env["LD_PRELOAD"] = os.environ["STEADFAST_LD_PRELOAD"]
        NOTES.append(f"steadfast ran with LD_PRELOAD={env['LD_PRELOAD']}")
    p = spawn(name, argv, env=env)
    wait_port(PORT[name], p, name)
    return p


def start_all():
    for port_name, port in list(PORT.items()) + [(f"hold-{k}", v) for k, v in HOLD_PORT.items()]:
        if port_open(port):
            raise SystemExit(f"port {port} ({port_name}) is already in use; set BASE_PORT=")
    write_bodies()
    peers = {}
    # Upstreams.
    p = spawn("nginx-upstream", ["nginx", "-e", f"{LOGS}/nginx-upstream.error.log", "-g", "daemon off;",
                                 "-c", upstream_nginx_conf()])
    wait_port(PORT["up"], p, "nginx-upstream")
    peers["direct"] = Peer("direct", PORT["up"], p)   # its CPU is the upstream's own
    sse_args = [SFBENCH, "upstream", "--listen", f"127.0.0.1:{PORT['sse']}",
                "--events", str(K["SSE_EVENTS"]), "--event-delay-ms", str(K["SSE_EVENT_DELAY_MS"])]
    p = spawn("sse-upstream", sse_args)
    wait_port(PORT["sse"], p, "sse-upstream")
    hold_args = [SFBENCH, "upstream", "--events", "2", "--event-delay-ms", "3600000"]
    for v in HOLD_PORT.values():
        hold_args += ["--listen", f"127.0.0.1:{v}"]
    p = spawn("hold-upstream", hold_args)
    wait_port(HOLD_PORT["direct"], p, "hold-upstream")
    COMMANDS.append(("upstream", "nginx -c out/conf/nginx-upstream.conf  (canned JSON on :%d, 429 on :%d)"
                     % (PORT["up"], PORT["up429"])))
    COMMANDS.append(("upstream", " ".join(sse_args).replace(ROOT + "/", "")))
    COMMANDS.append(("upstream", " ".join(hold_args).replace(ROOT + "/", "")))
    steadfasts = [n for n in STEADFASTS if n in PEERS]
    extra_up = []
    if "steadfast" in PEERS and "translate" in SCENARIOS:
        extra_up.append(("tr-upstream", "tr_up", ["--events", str(K["TR_EVENTS"]),
                                                  "--event-delay-ms", str(K["TR_EVENT_DELAY_MS"])]))
    if "steadfast" in PEERS and "resume" in SCENARIOS:
        # The first provider cuts every stream where content event CUT_AFTER+1
        # was due; the second continues it with tokens named "more".
        extra_up.append(("cut-upstream", "cut", ["--events", "1000", "--cut-after", str(K["RESUME_CUT_AFTER"]),
                                                 "--event-delay-ms", str(K["RESUME_EVENT_DELAY_MS"])]))
        extra_up.append(("cont-upstream", "cont", ["--events", "4", "--word", "more",
                                                   "--event-delay-ms", str(K["RESUME_EVENT_DELAY_MS"])]))
    for logname, port, extra in extra_up:
        argv = [SFBENCH, "upstream", "--listen", f"127.0.0.1:{PORT[port]}"] + extra
        p = spawn(logname, argv)
        wait_port(PORT[port], p, logname)
        COMMANDS.append(("upstream", " ".join(argv).replace(ROOT + "/", "")))

    if any(traced(n) for n in steadfasts):
        sink_args = [SFBENCH, "otlp-sink", "--listen", f"127.0.0.1:{PORT['otlp']}"]
        p = spawn("otlp-sink", sink_args)
        wait_port(PORT["otlp"], p, "otlp-sink")
        COMMANDS.append(("otlp", " ".join(sink_args).replace(ROOT + "/", "")))
        if OTLP:
            NOTES.append("the steadfast column ran with tracing on (STEADFAST_OTLP=1): telemetry.otlp_endpoint set, "
                         "sample_ratio 1.0, every request exported to sfbench otlp-sink")
    for name in steadfasts:
        p = start_steadfast(name)
        if p:
            peers[name] = Peer(name, PORT[name], p)
    if "nginx" in PEERS:
        p = spawn("nginx-proxy", ["nginx", "-e", f"{LOGS}/nginx-proxy.error.log", "-g", "daemon off;",
                                  "-c", nginx_proxy_conf()])
        wait_port(PORT["nginx"], p, "nginx-proxy")
        peers["nginx"] = Peer("nginx", PORT["nginx"], p)
        # worker_connections is sized for the open-streams test, and nginx
        # preallocates its connection table: measure the default (1024) too.
        q = spawn("nginx-proxy-default", ["nginx", "-e", f"{LOGS}/nginx-proxy-default.error.log", "-g", "daemon off;",
                                          "-c", nginx_proxy_conf("-default", PORT["nginx"] + 1, 1024)])
        wait_port(PORT["nginx"] + 1, q, "nginx-proxy-default")
        time.sleep(2)
        R["nginx_default_rss"] = rss_bytes(q.pid)
        stop("nginx-proxy-default", q)
        PROCS.remove(("nginx-proxy-default", q))
    if "haproxy" in PEERS:
        p = spawn("haproxy", ["haproxy", "-db", "-f", haproxy_conf()])
        wait_port(PORT["haproxy"], p, "haproxy")
        peers["haproxy"] = Peer("haproxy", PORT["haproxy"], p)
    if "pingora" in PEERS:
        if not os.path.exists(PINGORA):
            NOTES.append(f"pingora baseline: not built ({PINGORA} missing); its column is n/a.")
        else:
            argv = [PINGORA, f"127.0.0.1:{PORT['pingora']}", str(K["PROXY_THREADS"]), f"127.0.0.1:{PORT['up']}",
                    f"127.0.0.1:{PORT['sse']}", f"127.0.0.1:{HOLD_PORT['pingora']}"]
            p = spawn("pingora", argv, env=dict(os.environ, RUST_LOG="error"))
            wait_port(PORT["pingora"], p, "pingora")
            peers["pingora"] = Peer("pingora", PORT["pingora"], p)
    if "litellm" in PEERS:
        litellm = os.path.join(VENV, "bin", "litellm")
        if not os.path.exists(litellm):
            NOTES.append(f"LiteLLM: not installed ({litellm} missing); its column is n/a.")
        else:
            env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False",
                       LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION", DISABLE_ADMIN_UI="True",
                       NO_DOCS="True", NO_REDOC="True",
                       # Default 500 upstream connections per host would cap the open-streams test.
                       AIOHTTP_CONNECTOR_LIMIT="20000", AIOHTTP_CONNECTOR_LIMIT_PER_HOST="20000")
            env.pop("DATABASE_URL", None)
            argv = [litellm, "--config", litellm_conf(), "--host", "127.0.0.1", "--port", str(PORT["litellm"]),
                    "--num_workers", str(K["LITELLM_WORKERS"])]
            p = spawn("litellm", argv, env=env)
            try:
                wait_port(PORT["litellm"], p, "litellm", timeout=180)
                peers["litellm"] = Peer("litellm", PORT["litellm"], p)
            except SystemExit as e:
                NOTES.append(f"LiteLLM: did not start ({e}); its column is n/a.")
                stop("litellm", p)
    # Every peer answers a request before anything is measured.
    for name, peer in peers.items():
        for kind in ("json", "sse"):
            out = run(["curl", "-sS", "-m", "30", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                       "-H", "content-type: application/json", "-H", f"authorization: Bearer {KEY}",
                       "--data-binary", f"@{BODIES}/{kind}.json",
                       peer.url(kind)], "check", 40, record=False)
            if out.strip() != "200":
                raise SystemExit(f"{name} {kind}: expected 200, got {out.strip()!r}")
    return peers


# ------------------------------------------------------------------ load generators

def oha_bin():
    for c in [os.environ.get("OHA_BIN"), os.path.expanduser("~/.cargo/bin/oha"), "/usr/local/bin/oha"]:
        if c and os.path.exists(c):
            return c
    return "oha"


def oha(peer, kind, extra, scenario, timeout):
    argv = [oha_bin(), "--no-tui", "--output-format", "json", "-m", "POST",
            "-H", "content-type: application/json", "-H", f"authorization: Bearer {KEY}",
            "-D", f"{BODIES}/{kind}.json"] + extra + [peer.url(kind)]
    out = run(argv, scenario, timeout)
    try:
        return json.loads(out[out.index("{"):])
    except ValueError:
        return {"error": out[-2000:]}


def oha_summary(j):
    """p50/p99 in µs, success count, non-2xx count, rps."""
    if "error" in j and "summary" not in j:
        return {"error": j["error"][-300:]}
    pct = j.get("latencyPercentiles", {})
    dist = j.get("statusCodeDistribution", {})
    ok = sum(v for k, v in dist.items() if k.startswith("2"))
    bad = sum(v for k, v in dist.items() if not k.startswith("2"))
    # Requests still in flight when -z ends are aborted by oha itself: not errors.
    errs = sum(v for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k)
    return {
        "p50_us": (pct.get("p50") or 0) * 1e6, "p99_us": (pct.get("p99") or 0) * 1e6,
        "ok": ok, "non2xx": bad, "errors": errs,
        "rps": j.get("summary", {}).get("requestsPerSec"),
        "success_rate": j.get("summary", {}).get("successRate"),
    }


def wrk(peer, kind, duration, conns, scenario):
    argv = ["wrk", "-t", str(K["WRK_THREADS"]), "-c", str(conns), "-d", f"{duration}s", "--latency",
            "-s", os.path.join(HERE, "post.lua"), peer.url(kind)]
    out = run(argv, scenario, duration + 60, env=dict(os.environ, BODY=f"{BODIES}/{kind}.json", KEY=KEY))
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    serr = re.search(r"Socket errors:.*", out)
    return {"rps": float(m.group(1)) if m else None, "requests": int(n.group(1)) if n else 0,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": serr.group(0) if serr else "",
            "raw": out}


# ------------------------------------------------------------------ scenarios

NOTES = []
R = {}   # results[figure][peer] = value
NO_FAILOVER = set()   # (fo_dead|fo_429, peer) that returned the error instead of failing over


def no_failover(fig, name):
    for kind in ("fo_dead", "fo_429"):
        if fig.startswith(kind + "_p") and (kind, name) in NO_FAILOVER:
            return True
    return False


def rotate(names, i):
    i %= len(names)
    return names[i:] + names[:i]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def scenario_throughput(peers):
    log("throughput at saturation (wrk, closed loop)")
    for name, peer in peers.items():   # warm-up, not recorded
        wrk(peer, "json", 2, 8, "warmup")
    got = {n: [] for n in peers}
    errs = {}
    for rnd in range(K["ROUNDS"]):
        for name in rotate(list(peers), rnd):
            r = wrk(peers[name], "json", K["DURATION"], K["CONNS"], "throughput")
            save(f"throughput-{name}-r{rnd}.txt", r["raw"])
            if r["non2xx"] or r["socket_errors"]:
                NOTES.append(f"throughput {name} round {rnd}: non-2xx={r['non2xx']} {r['socket_errors']}")
            got[name].append(r["rps"])
            errs.setdefault(name, []).append(r)
            log(f"  {name:10s} round {rnd}: {r['rps']} req/s  {r['socket_errors']}")
    R["rps"] = {n: med(v) for n, v in got.items()}
    R["rps_conn_errors"] = {}
    for n, rs in errs.items():
        failed = sum(sum(int(x) for x in re.findall(r"\d+", r["socket_errors"])) + r["non2xx"] for r in rs)
        total = sum(r["requests"] for r in rs)
        R["rps_conn_errors"][n] = f"{failed} / {total}"


def scenario_latency(peers):
    log(f"latency at a fixed {K['RATE']} req/s (oha, open loop, coordinated-omission corrected)")
    got = {n: [] for n in peers}
    for rnd in range(K["ROUNDS"]):
        for name in rotate(list(peers), rnd):
            j = oha(peers[name], "json", ["-z", f"{K['DURATION']}s", "-q", str(K["RATE"]), "--latency-correction",
                                          "-c", str(K["LAT_CONNS"])], "latency", K["DURATION"] + 60)
            save(f"latency-{name}-r{rnd}.json", json.dumps(j, indent=1))
            s = oha_summary(j)
            got[name].append(s)
            log(f"  {name:10s} round {rnd}: p50 {s.get('p50_us', 0):.0f} µs  p99 {s.get('p99_us', 0):.0f} µs  "
                f"rps {s.get('rps') or 0:.0f}  non2xx {s.get('non2xx')} errors {s.get('errors')}")
            if s.get("non2xx") or s.get("errors") or "error" in s:
                NOTES.append(f"latency {name} round {rnd}: non-2xx={s.get('non2xx')} errors={s.get('errors')}"
                             f" {s.get('error', '')}")
    R["lat_p50"] = {n: med([s.get("p50_us") for s in v]) for n, v in got.items()}
    R["lat_p99"] = {n: med([s.get("p99_us") for s in v]) for n, v in got.items()}
    R["lat_rps"] = {n: med([s.get("rps") for s in v]) for n, v in got.items()}


def scenario_sse(peers):
    log(f"SSE first-event latency (sfbench ttfe; upstream sends event 1, role and first token, at once, then "
        f"{K['SSE_EVENTS'] - 1} more {K['SSE_EVENT_DELAY_MS']} ms apart)")
    got = {n: [] for n in peers}
    for rnd in range(K["ROUNDS"]):
        for name in rotate(list(peers), rnd):
            peer = peers[name]
            # The first token must reach the client (a peer that dropped it would look fast).
            j = ttfe_run(peer, "sse", K["TTFE_N"], 20, "sse_first_event", expect=["tok0 "])
            save(f"sse-{name}-r{rnd}.json", json.dumps(j))
            got[name].append(j)
            fe = j.get("first_event_us") or {}
            en = j.get("end_us") or {}
            log(f"  {name:10s} round {rnd}: first event p50 {fe.get('p50')} p99 {fe.get('p99')} µs; "
                f"end p50 {en.get('p50')} µs; ok {j.get('ok')} errors {j.get('errors')}")
            if j.get("errors"):
                NOTES.append(f"sse {name} round {rnd}: errors={j.get('errors')} {j.get('last_error')}")
    R["sse_p50"] = {n: med([(j.get("first_event_us") or {}).get("p50") for j in v]) for n, v in got.items()}
    R["sse_p99"] = {n: med([(j.get("first_event_us") or {}).get("p99") for j in v]) for n, v in got.items()}
    R["sse_end_p50"] = {n: med([(j.get("end_us") or {}).get("p50") for j in v]) for n, v in got.items()}
    R["sse_connects"] = {n: sum(j.get("connects", 0) for j in v) for n, v in got.items()}
    R["sse_streams"] = {n: sum(j.get("ok", 0) + j.get("errors", 0) for j in v) for n, v in got.items()}


def scenario_cpu(peers):
    n = K["CPU_REQUESTS"]
    log(f"CPU per 1k requests ({n} requests, oha closed loop -c {K['CONNS']}; utime+stime from /proc)")
    got = {x: [] for x in peers}
    for rnd in range(K["ROUNDS"]):
        for name in rotate(list(peers), rnd):
            peer = peers[name]
            # Slow peers get fewer requests (about 10 s of work), never fewer than 1000.
            rps = R.get("rps", {}).get(name)
            count = min(n, max(1000, int(rps * 10))) if rps else n
            before = cpu_seconds(peer.pid)
            j = oha(peer, "json", ["-n", str(count), "-c", str(K["CONNS"])], "cpu", 600)
            after = cpu_seconds(peer.pid)
            save(f"cpu-{name}-r{rnd}.json", json.dumps(j, indent=1))
            s = oha_summary(j)
            done = s.get("ok", 0) + s.get("non2xx", 0)
            ms = (after - before) * 1000 / (done / 1000) if done else None
            got[name].append(ms)
            log(f"  {name:10s} round {rnd}: {after - before:.2f} s CPU for {done} requests -> {ms and round(ms, 1)} ms/1k")
    R["cpu_ms_per_1k"] = {x: med(v) for x, v in got.items()}


def scrape(port):
    try:
        out = subprocess.run(["curl", "-sS", "-m", "5", f"http://127.0.0.1:{port}/metrics"],
                             capture_output=True, text=True, timeout=10).stdout
    except subprocess.TimeoutExpired:
        return ""
    return out


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def scenario_failover(peers):
    rate, dur = K["FO_RATE"], K["FO_DURATION"]
    log(f"failover cost (oha -q {rate} --latency-correction, {dur}s): normal path vs first provider refusing / 429")
    got = {}
    for rnd in range(K["ROUNDS"]):
        for name in rotate([n for n in peers if peers[n].supports("fo_dead")], rnd):
            peer = peers[name]
            for kind in ("json", "fo_dead", "fo_429"):
                m0 = scrape(ADMIN_PORT[name]) if name in STEADFASTS else ""
                l0 = count_lines(f"{LOGS}/upstream-429.access.log")
                j = oha(peer, kind, ["-z", f"{dur}s", "-q", str(rate), "--latency-correction", "-c", "16"],
                        "failover", dur + 60)
                save(f"failover-{kind}-{name}-r{rnd}.json", json.dumps(j, indent=1))
                s = oha_summary(j)
                total = s.get("ok", 0) + s.get("non2xx", 0) + s.get("errors", 0)
                hit429 = count_lines(f"{LOGS}/upstream-429.access.log") - l0
                s["hit_first"] = None
                if kind == "fo_429" and total:
                    s["hit_first"] = hit429 / total
                if name in STEADFASTS and kind == "fo_dead" and total:
                    m1 = scrape(ADMIN_PORT[name])
                    tried = (metric_sum(m1, "steadfast_upstream_attempts_total", provider="dead")
                             - metric_sum(m0, "steadfast_upstream_attempts_total", provider="dead"))
                    s["hit_first"] = tried / total
                got.setdefault((name, kind), []).append(s)
                log(f"  {name:10s} {kind:8s} round {rnd}: p50 {s.get('p50_us', 0):.0f} µs p99 {s.get('p99_us', 0):.0f} µs"
                    f"  2xx {s.get('ok')} non2xx {s.get('non2xx')} errors {s.get('errors')}"
                    + (f"  first provider tried for {s['hit_first']:.0%}" if s.get("hit_first") is not None else ""))
    for key in ("fo_p50", "fo_p99"):
        R.setdefault(key, {})
    for (name, kind), v in got.items():
        R.setdefault(f"{kind}_p50", {})[name] = med([s.get("p50_us") for s in v])
        R.setdefault(f"{kind}_p99", {})[name] = med([s.get("p99_us") for s in v])
        oks = sum(s.get("ok", 0) for s in v)
        tot = sum(s.get("ok", 0) + s.get("non2xx", 0) + s.get("errors", 0) for s in v)
        R.setdefault(f"{kind}_ok", {})[name] = oks / tot if tot else None
        hf = [s["hit_first"] for s in v if s.get("hit_first") is not None]
        R.setdefault(f"{kind}_hit_first", {})[name] = med(hf)


def scenario_streams(peers):
    limit = nofile()
    want = K["STREAMS"]
    n = min(want, (limit - 200) // 2)   # a proxy holds two sockets per stream
    if n < want:
        NOTES.append(f"open SSE streams: asked for {want}, ran {n}: the open-files limit here is {limit} "
                     f"(hard limit; raising it needs CAP_SYS_RESOURCE) and a proxy needs two sockets per stream. "
                     f"The 10k figure is extrapolated linearly from the measured per-stream cost.")
    R["streams_n"] = n
    log(f"RSS with {n} concurrent open SSE streams (sfbench hold)")
    R["rss_before_streams"], R["rss_streams"], R["streams_held"], R["streams_establish_s"] = {}, {}, {}, {}
    for name, peer in peers.items():
        if name == "direct":
            continue
        time.sleep(1)
        R["rss_before_streams"][name] = rss_bytes(peer.pid)
        argv = [SFBENCH, "hold", "--addr", peer.addr("hold"), "--path", peer.path("hold"),
                "--body-file", f"{BODIES}/hold.json", "--streams", str(n), "--parallel", "200",
                "--timeout-s", str(K["STREAM_TIMEOUT_S"]), "--hold-s", "600",
                "--header", f"Authorization: Bearer {KEY}"]
        COMMANDS.append(("streams", " ".join(shlex.quote(a) for a in argv)))
        p, j = park(f"hold-{name}", argv, K["STREAM_TIMEOUT_S"] + 30)
        time.sleep(1)   # let allocations settle
        rss = rss_bytes(peer.pid)
        R["rss_streams"][name] = rss
        R["streams_held"][name] = j.get("held", 0)
        R["streams_establish_s"][name] = j.get("establish_s")
        log(f"  {name:10s}: held {j.get('held')}/{n} in {j.get('establish_s')} s, RSS {rss / 2**20:.1f} MiB"
            f" (before {R['rss_before_streams'][name] / 2**20:.1f} MiB) {j.get('last_error') or ''}")
        if j.get("held", 0) < n:
            NOTES.append(f"open SSE streams through {name}: only {j.get('held')} of {n} streams got their first "
                         f"event within {K['STREAM_TIMEOUT_S']} s (last error: {j.get('last_error')!r})")
        unpark(f"hold-{name}", p)
        time.sleep(3)   # let the peer close its upstream side


def park(logname, argv, timeout):
    """Start an sfbench client that opens connections and keeps them (hold, flood);
    return it and the JSON line it prints once they are all open."""
    p = spawn(logname, argv, stdin=subprocess.PIPE)
    # spawn() sends stdout to a log file; read the result line from it.
    logpath = os.path.join(LOGS, f"{logname}.log")
    end = time.time() + timeout
    line = None
    while time.time() < end and p.poll() is None:
        with open(logpath) as f:
            for l in f:
                if l.startswith("{"):
                    line = l
        if line:
            break
        time.sleep(0.2)
    try:
        j = json.loads(line) if line else {"held": 0, "last_error": "no result line"}
    except ValueError:
        j = {"held": 0, "last_error": line}
    return p, j


def unpark(logname, p):
    """Close a parked client's stdin: it closes all its connections and exits."""
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        stop(logname, p)
    PROCS.remove((logname, p))


def scenario_flood(peers):
    """RSS before, during and after a flood of keep-alive connections."""
    limit = nofile()
    n = min(K["FLOOD_CONNS"], (limit - 200) // 2)   # the peer may hold an upstream socket per connection
    if n < K["FLOOD_CONNS"]:
        NOTES.append(f"connection flood: asked for {K['FLOOD_CONNS']} connections, ran {n} (open-files limit {limit}).")
    R["flood_n"] = n
    log(f"connection flood: {n} keep-alive connections, one request each, then all closed; "
        f"RSS polled for up to {K['FLOOD_SETTLE_S']} s")
    for fig in ("flood_before", "flood_peak", "flood_after", "flood_settle_s", "flood_ok", "flood_series", "flood_fds"):
        R[fig] = {}
    for name, peer in peers.items():
        if name == "direct":
            continue
        time.sleep(1)
        before = rss_bytes(peer.pid)
        argv = [SFBENCH, "flood", "--addr", peer.addr("json"), "--path", peer.path("json"),
                "--body-file", f"{BODIES}/json.json", "--accept", "application/json", "--conns", str(n),
                "--parallel", str(K["FLOOD_PARALLEL"]), "--timeout-s", str(K["STREAM_TIMEOUT_S"]), "--hold-s", "600",
                "--header", f"Authorization: Bearer {KEY}"]
        COMMANDS.append(("flood", " ".join(shlex.quote(a) for a in argv)))
        p, j = park(f"flood-{name}", argv, K["STREAM_TIMEOUT_S"] + 30)
        peak = rss_bytes(peer.pid)
        unpark(f"flood-{name}", p)
        # Settled once RSS has stayed within 1% (256 KiB at least) for 3 s;
        # reported from the first of those samples.
        t0, series, settled = time.time(), [], None
        while time.time() - t0 < K["FLOOD_SETTLE_S"]:
            time.sleep(0.5)
            series.append((round(time.time() - t0, 1), rss_bytes(peer.pid)))
            last = [r for _, r in series[-7:]]
            if len(last) == 7 and max(last) - min(last) <= max(256 * 1024, 0.01 * max(last)):
                settled = series[-7][0]
                break
        after = series[-1][1] if series else peak
        R["flood_before"][name], R["flood_peak"][name], R["flood_after"][name] = before, peak, after
        R["flood_settle_s"][name] = settled
        R["flood_ok"][name] = j.get("held", 0)
        R["flood_series"][name] = series
        R["flood_fds"][name] = open_fds(peer.pid)
        log(f"  {name:18s}: {j.get('held')}/{n} answered in {j.get('establish_s')} s; RSS before {before / 2**20:.1f} MiB, "
            f"with all open {peak / 2**20:.1f} MiB, after close {after / 2**20:.1f} MiB "
            + (f"(settled {settled:.1f} s after the close)" if settled is not None
               else f"(still moving {K['FLOOD_SETTLE_S']} s after the close)")
            + f"; {R['flood_fds'][name]} fds open {j.get('last_error') or ''}")
        if j.get("held", 0) < n:
            NOTES.append(f"connection flood through {name}: only {j.get('held')} of {n} connections got their answer "
                         f"(last error: {j.get('last_error')!r})")
        time.sleep(2)


def ttfe_run(peer, kind, n, warmup, scenario, expect=()):
    argv = [SFBENCH, "ttfe", "--addr", peer.addr(kind), "--path", peer.path(kind), "--body-file",
            f"{BODIES}/{kind}.json", "--n", str(n), "--warmup", str(warmup),
            "--header", f"Authorization: Bearer {KEY}"]
    for e in expect:
        argv += ["--expect", e]
    out = run(argv, scenario, 300)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": 0, "errors": -1, "last_error": out[-300:]}


def scenario_translate(peers):
    """An Anthropic client through a translate: true route to an OpenAI Chat provider,
    against an OpenAI client on the same provider untranslated (steadfast only)."""
    if "steadfast" not in peers:
        return
    peer = peers["steadfast"]
    n, events = K["TR_N"], K["TR_EVENTS"]
    warmup = 10
    log(f"translated streams: {n} Anthropic-dialect streams via translate: true to an OpenAI Chat provider vs "
        f"{n} OpenAI streams untranslated; {events} chunks {K['TR_EVENT_DELAY_MS']} ms apart")
    got = {"tr": [], "tr_plain": []}
    for rnd in range(K["ROUNDS"]):
        for kind in rotate(["tr_plain", "tr"], rnd):
            expect = ["message_stop", "tok1 "] if kind == "tr" else ["[DONE]", "tok1 "]
            before = cpu_seconds(peer.pid)
            j = ttfe_run(peer, kind, n, warmup, "translate", expect)
            cpu = cpu_seconds(peer.pid) - before
            save(f"translate-{kind}-r{rnd}.json", json.dumps(j))
            streams = (j.get("ok") or 0) + warmup
            # Per chunk the provider sent (TR_EVENTS chunks and [DONE]).
            j["cpu_us_per_event"] = cpu * 1e6 / (streams * (events + 1)) if j.get("ok") else None
            j["cpu_us_per_stream"] = cpu * 1e6 / streams if j.get("ok") else None
            got[kind].append(j)
            fe = j.get("first_event_us") or {}
            log(f"  {kind:8s} round {rnd}: first event p50 {fe.get('p50')} p99 {fe.get('p99')} µs; "
                f"CPU {j['cpu_us_per_event'] and round(j['cpu_us_per_event'], 2)} µs/event; "
                f"ok {j.get('ok')} errors {j.get('errors')} {j.get('last_error') or ''}")
            if j.get("errors"):
                NOTES.append(f"translate {kind} round {rnd}: errors={j.get('errors')} {j.get('last_error')}")
    for kind, v in got.items():
        R[f"{kind}_p50"] = {"steadfast": med([(j.get("first_event_us") or {}).get("p50") for j in v])}
        R[f"{kind}_p99"] = {"steadfast": med([(j.get("first_event_us") or {}).get("p99") for j in v])}
        R[f"{kind}_end_p50"] = {"steadfast": med([(j.get("end_us") or {}).get("p50") for j in v])}
        R[f"{kind}_cpu_event"] = {"steadfast": med([j.get("cpu_us_per_event") for j in v])}
        R[f"{kind}_cpu_stream"] = {"steadfast": med([j.get("cpu_us_per_stream") for j in v])}
        R[f"{kind}_ok"] = {"steadfast": sum(j.get("ok") or 0 for j in v)}
        R[f"{kind}_errors"] = {"steadfast": sum(max(j.get("errors") or 0, 0) for j in v)}


def scenario_resume(peers):
    """Time to the next token after a cut, through steadfast with resume_streams on (its own instance)."""
    if "steadfast" not in PEERS:
        return
    n = K["RESUME_N"]
    log(f"stream resumption: {n} streams cut after {K['RESUME_CUT_AFTER']} tokens and continued on the next "
        f"provider (a steadfast instance with retry.resume_streams: true)")
    p = start_steadfast("steadfast-resume")
    if not p:
        return
    peer = Peer("steadfast-resume", PORT["steadfast-resume"], p)
    got = []
    try:
        for rnd in range(K["ROUNDS"]):
            argv = [SFBENCH, "gap", "--addr", peer.addr("resume"), "--path", peer.path("resume"),
                    "--body-file", f"{BODIES}/resume.json", "--mark", "more", "--n", str(n), "--warmup", "5",
                    "--header", f"Authorization: Bearer {KEY}"]
            out = run(argv, "resume", 300)
            save(f"resume-r{rnd}.json", out)
            try:
                j = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                j = {"ok": 0, "errors": -1, "last_error": out[-300:]}
            got.append(j)
            g, nm = j.get("gap_us") or {}, j.get("normal_gap_us") or {}
            log(f"  round {rnd}: gap after the cut p50 {g.get('p50')} p99 {g.get('p99')} µs; normal gap p50 "
                f"{nm.get('p50')} µs; ok {j.get('ok')} not resumed {j.get('not_resumed')} errors {j.get('errors')} "
                f"{j.get('last_error') or ''}")
            if j.get("errors") or j.get("not_resumed"):
                NOTES.append(f"resume round {rnd}: not resumed={j.get('not_resumed')} errors={j.get('errors')} "
                             f"{j.get('last_error')}")
        m = scrape(ADMIN_PORT["steadfast-resume"])
        R["resume_metric"] = {"steadfast": metric_sum(m, "steadfast_stream_resumes_total", result="resumed")}
    finally:
        stop("steadfast-resume", p)
        PROCS.remove(("steadfast-resume", p))
    R["resume_gap_p50"] = {"steadfast": med([(j.get("gap_us") or {}).get("p50") for j in got])}
    R["resume_gap_p99"] = {"steadfast": med([(j.get("gap_us") or {}).get("p99") for j in got])}
    R["resume_normal_p50"] = {"steadfast": med([(j.get("normal_gap_us") or {}).get("p50") for j in got])}
    R["resume_extra_p50"] = {"steadfast": med([(j.get("extra_us") or {}).get("p50") for j in got])}
    R["resume_extra_p99"] = {"steadfast": med([(j.get("extra_us") or {}).get("p99") for j in got])}
    R["resume_ok"] = {"steadfast": sum(j.get("ok") or 0 for j in got)}
    R["resume_failed"] = {"steadfast": sum(max(j.get("errors") or 0, 0) + (j.get("not_resumed") or 0) for j in got)}


def scenario_held():
    """Bytes of setup events a stream holds before its first content (computed from the event shapes)."""
    out = run([SFBENCH, "shapes"], "held", 30)
    try:
        R["held"] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        NOTES.append(f"held bytes: sfbench shapes failed: {out[-300:]}")


# ------------------------------------------------------------------ report

VERSIONS = None


def versions():
    if VERSIONS:
        return VERSIONS

    def cmd(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "not found"
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        rev, dirty = "?", ""
    lit = cmd([os.path.join(VENV, "bin", "python"), "-c",
               "import importlib.metadata as m; print(m.version('litellm'))"])
    out = {
        "steadfast": f"{cmd([STEADFAST, '--version'])} (git {rev}{', uncommitted changes in src/' if dirty else ''}; "
                     f"{allocator(STEADFAST)})",
        "nginx": cmd(["nginx", "-v"]),
        "haproxy": cmd(["haproxy", "-v"]),
        "litellm": f"litellm {lit} (uvicorn, {K['LITELLM_WORKERS']} worker(s); {cmd([os.path.join(VENV, 'bin', 'python'), '--version'])})",
        "wrk": cmd(["wrk", "-v"]),
        "oha": cmd([oha_bin(), "--version"]),
        "sfbench": "bench/tools (tokio; upstream, ttfe, gap, hold, flood, shapes, otlp-sink)",
        "pingora baseline": "bench/pingora-baseline, pingora-proxy " + lock_version(
            os.path.join(HERE, "pingora-baseline", "Cargo.lock"), "pingora-proxy"),
        "rustc": cmd(["rustc", "--version"]),
    }
    if "steadfast-glibc" in PEERS:
        out["steadfast-glibc"] = (f"{cmd([STEADFAST_GLIBC, '--version'])} (same sources, --no-default-features; "
                                  f"{allocator(STEADFAST_GLIBC)})")
    return out


def lock_version(lockfile, crate):
    try:
        text = open(lockfile).read()
    except OSError:
        return "?"
    m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(crate), text)
    return m.group(1) if m else "?"


MACHINE = None


def machine():
    if MACHINE:
        return MACHINE
    cpu = "?"
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for l in open("/proc/meminfo"):
            if l.startswith("MemTotal"):
                mem = f"{int(l.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "memory": mem,
            "load_at_start": LOAD_AT_START, "load_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "nofile": nofile()}


def fmt_us(v):
    if v is None:
        return "n/a"
    return f"{v / 1000:.2f} ms" if v >= 10000 else f"{v:.0f} µs"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    r = a / b
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×"


def mib(v):
    return "n/a" if v is None else f"{v / 2**20:.1f} MiB"


def report(peers, started, finished):
    # Columns: the peers asked for (absent ones show n/a), in the usual order.
    cols = ["direct"] + [p for p in ["steadfast"] + VARIANTS + MAIN_PEERS[1:] if p in PEERS]
    main_cols = [p for p in MAIN_PEERS if p in PEERS]
    have = set(peers)

    def cell(fig, name, kind):
        v = R.get(fig, {}).get(name)
        if no_failover(fig, name):
            return "no failover"
        if name not in have or v is None:
            return "n/a"
        if kind == "rps":
            return f"{v:,.0f}"
        if kind == "us":
            return fmt_us(v)
        if kind == "mib":
            return mib(v)
        if kind == "ms":
            return f"{v:.1f} ms"
        if kind == "pct":
            return f"{v:.0%}"
        if kind == "x2":
            return f"{v:.2f}"
        if kind == "times":
            return f"{v:.2f}×"
        return str(v)

    def added(fig, name):
        v, d = R.get(fig, {}).get(name), R.get(fig, {}).get("direct")
        return None if v is None or d is None else v - d

    # Derived: added latency and streams extrapolation.
    for fig in ("lat_p50", "lat_p99", "sse_p50", "sse_p99"):
        R[fig + "_added"] = {n: added(fig, n) for n in peers if n != "direct"}
    for kind in ("fo_dead", "fo_429"):
        for q in ("p50", "p99"):
            R[f"{kind}_{q}_extra"] = {n: (R.get(f"{kind}_{q}", {}).get(n) - R["json_" + q][n])
                                      if R.get(f"{kind}_{q}", {}).get(n) is not None and R.get("json_" + q, {}).get(n)
                                      is not None else None for n in peers if n != "direct"}
    # A peer that answered most failover requests with the error itself did not fail over:
    # no "extra latency" for it.
    for kind in ("fo_dead", "fo_429"):
        for n, ok in R.get(f"{kind}_ok", {}).items():
            if ok is not None and ok < 0.5:
                for q in ("p50", "p99"):
                    R[f"{kind}_{q}_extra"][n] = None
                NO_FAILOVER.add((kind, n))
    R["sse_conn_pct"] = {k: round(100 * v / R["sse_streams"][k]) for k, v in R.get("sse_connects", {}).items()
                         if R.get("sse_streams", {}).get(k)}
    n = R.get("streams_n") or 0
    R["per_stream"], R["rss_10k"] = {}, {}
    for name in R.get("rss_streams", {}):
        held = R["streams_held"].get(name) or 0
        if held:
            per = (R["rss_streams"][name] - R["rss_before_streams"][name]) / held
            R["per_stream"][name] = per
            R["rss_10k"][name] = R["rss_before_streams"][name] + per * 10000
            # Memory an allocator kept from earlier scenarios (the connection
            # flood above all, with the system allocator) is reused by the
            # new streams and hides their cost.
            idle = R.get("rss_idle", {}).get(name)
            if idle and R["rss_before_streams"][name] > 2 * idle:
                NOTES.append(f"{name}: RSS before the streams test was {mib(R['rss_before_streams'][name])}, "
                             f"{R['rss_before_streams'][name] / idle:.1f}× its idle RSS (memory kept from earlier "
                             "scenarios, the connection flood above all); the streams reuse it, so its 'RSS per "
                             "open stream' and 10,000-stream figures understate what streams cost from idle.")
    # The flood: RSS after the close against idle (just after start) and
    # against just before the flood.
    R["flood_vs_idle"], R["flood_vs_before"], R["flood_back"] = {}, {}, {}
    for name, after in R.get("flood_after", {}).items():
        if R.get("rss_idle", {}).get(name):
            R["flood_vs_idle"][name] = after / R["rss_idle"][name]
        if R.get("flood_before", {}).get(name):
            R["flood_vs_before"][name] = after / R["flood_before"][name]
        t = R.get("flood_settle_s", {}).get(name)
        R["flood_back"][name] = f"{t:.1f} s" if t is not None else f"still moving at {K['FLOOD_SETTLE_S']} s"
    fn = R.get("flood_n") or K["FLOOD_CONNS"]

    rows = [
        ("Throughput at saturation, req/s (wrk -c %d)" % K["CONNS"], "rps", "rps", True),
        ("  failed requests (socket errors + non-2xx) / requests", "rps_conn_errors", "int", False),
        (f"Latency p50 at {K['RATE']} req/s (open loop, CO-corrected)", "lat_p50", "us", False),
        (f"Latency p99 at {K['RATE']} req/s", "lat_p99", "us", False),
        ("  added p50 vs direct", "lat_p50_added", "us", False),
        ("  added p99 vs direct", "lat_p99_added", "us", False),
        ("  achieved rate, req/s", "lat_rps", "rps", False),
        ("SSE first event p50", "sse_p50", "us", False),
        ("SSE first event p99", "sse_p99", "us", False),
        ("  added first-event p50 vs direct", "sse_p50_added", "us", False),
        ("  added first-event p99 vs direct", "sse_p99_added", "us", False),
        ("SSE whole stream p50 (%d events, %d ms apart)" % (K["SSE_EVENTS"], K["SSE_EVENT_DELAY_MS"]),
         "sse_end_p50", "us", False),
        ("CPU per 1k requests (proxy process tree; direct = the upstream itself)", "cpu_ms_per_1k", "ms", False),
        ("  new client connections per 100 streams (keep-alive reuse)", "sse_conn_pct", "int", False),
        ("Idle RSS (after start; sum over the process tree)", "rss_idle", "mib", False),
        ("Idle PSS (shared pages split between processes)", "pss_idle", "mib", False),
        ("RSS before the streams test (after load)", "rss_before_streams", "mib", False),
        (f"RSS with {n} open SSE streams", "rss_streams", "mib", False),
        ("  streams that got their first event", "streams_held", "int", False),
        ("  RSS per open stream", "per_stream", "kib", False),
        ("  RSS at 10,000 streams (measured or extrapolated)", "rss_10k", "mib", False),
        ("RSS before the connection flood", "flood_before", "mib", False),
        (f"RSS with {fn} keep-alive connections open (one request each)", "flood_peak", "mib", False),
        ("  connections answered", "flood_ok", "int", False),
        (f"RSS after closing them all (polled up to {K['FLOOD_SETTLE_S']} s)", "flood_after", "mib", False),
        ("  ÷ idle RSS (after start)", "flood_vs_idle", "times", False),
        ("  ÷ RSS before the flood", "flood_vs_before", "times", False),
        ("  settled (flat for 3 s) after the close", "flood_back", "int", False),
        ("  open file descriptors then (listeners, pooled upstream connections)", "flood_fds", "int", False),
        (f"Failover, first provider refuses: p50 at {K['FO_RATE']} req/s", "fo_dead_p50", "us", False),
        ("  extra p50 vs the same proxy's normal path", "fo_dead_p50_extra", "us", False),
        ("  extra p99 vs the same proxy's normal path", "fo_dead_p99_extra", "us", False),
        ("  requests answered 2xx", "fo_dead_ok", "pct", False),
        (f"Failover, first provider returns 429: p50 at {K['FO_RATE']} req/s", "fo_429_p50", "us", False),
        ("  extra p50 vs the same proxy's normal path", "fo_429_p50_extra", "us", False),
        ("  extra p99 vs the same proxy's normal path", "fo_429_p99_extra", "us", False),
        ("  requests answered 2xx", "fo_429_ok", "pct", False),
        ("  429 responses from the first provider per request", "fo_429_hit_first", "x2", False),
        ("Normal path p50 at the failover rate", "json_p50", "us", False),
    ]

    def c2(fig, name, kind):
        if kind == "kib":
            v = R.get(fig, {}).get(name)
            return "n/a" if v is None else f"{v / 1024:.1f} KiB"
        if kind == "int":
            v = R.get(fig, {}).get(name)
            return "n/a" if v is None else str(v)
        return cell(fig, name, kind)

    m = machine()
    v = versions()
    L = []
    L.append("# steadfast benchmark results\n")
    L.append(f"Generated by `bench/run.sh` on {finished:%Y-%m-%d %H:%M} UTC "
             f"(run took {(finished - started).total_seconds() / 60:.1f} min). Raw outputs: `bench/out/` (not committed).\n")
    if QUICK or (m["cores"] or 0) <= 2:
        L.append("> **Caveat.** " + ("QUICK=1 mode: short runs, few connections, one round. " if QUICK else "")
                 + f"This machine has {m['cores']} cores shared by the load generator, the upstream and the proxy "
                 f"(load average at start: {m['load_at_start']}; at end: {m['load_at_end']}). "
                 "Other work was running on it; treat the numbers as indicative, not as a verdict. "
                 "Re-run `bench/run.sh` on a quiet machine for figures to quote.\n")
    L.append("## Machine\n")
    L.append(f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory']}")
    L.append(f"- Kernel: Linux {m['kernel']}; open-files limit {m['nofile']}")
    L.append("- Knobs: " + ", ".join(f"{k}={v}" for k, v in K.items())
             + f", QUICK={int(QUICK)}, PEERS={','.join(PEERS)}, SCENARIOS={','.join(SCENARIOS)}\n")
    L.append("## Versions\n")
    for k, val in v.items():
        L.append(f"- {k}: {val}")
    L.append("")
    L.append("## Results\n")
    L.append("Medians over %d round(s); within a round every peer runs the same scenario in turn, "
             "and the order rotates per round. `direct` is the load generator straight to the upstream.\n" % K["ROUNDS"])
    hdr = "| figure | " + " | ".join(DISPLAY.get(c, c) for c in cols) + " |"
    L.append(hdr)
    L.append("|" + "---|" * (len(cols) + 1))
    for label, fig, kind, _ in rows:
        cells = [c2(fig, c, kind) for c in cols]
        if all(x == "n/a" for x in cells):   # a scenario not run
            continue
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L.append("")

    # Ratios.
    L.append("### Ratios\n")
    L.append("Each peer against the direct baseline and steadfast against each peer. Throughput: higher is better; "
             "added latency, CPU and memory: lower is better (a ratio < 1× means steadfast costs less).\n")
    L.append("| figure | " + " | ".join(f"{p} ÷ direct" for p in main_cols) + " | "
             + " | ".join(f"steadfast ÷ {p}" for p in main_cols if p != "steadfast") + " |")
    L.append("|" + "---|" * (len(main_cols) * 2 + (0 if "steadfast" in main_cols else 1)))
    ratio_rows = [("throughput", "rps"), ("latency p50 at %d req/s" % K["RATE"], "lat_p50"),
                  ("latency p99", "lat_p99"), ("SSE first event p50", "sse_p50"),
                  ("SSE first event p99", "sse_p99"),
                  ("CPU per 1k requests", "cpu_ms_per_1k")]
    for label, fig in ratio_rows:
        d = R.get(fig, {})
        left = [fmt_ratio(d.get(p), d.get("direct")) if p in have else "n/a" for p in main_cols]
        right = [fmt_ratio(d.get("steadfast"), d.get(p)) if p in have and "steadfast" in have else "n/a"
                 for p in main_cols if p != "steadfast"]
        if all(x == "n/a" for x in left + right):   # a scenario not run
            continue
        L.append(f"| {label} | " + " | ".join(left) + " | " + " | ".join(right) + " |")
    for label, fig in [("added latency p50", "lat_p50_added"), ("added latency p99", "lat_p99_added"),
                       ("added SSE first-event p50", "sse_p50_added"), ("idle RSS", "rss_idle"),
                       ("RSS with open streams", "rss_streams"), ("RSS after a connection flood", "flood_after"),
                       ("failover extra p50, refused", "fo_dead_p50_extra"),
                       ("failover extra p50, 429", "fo_429_p50_extra")]:
        d = R.get(fig, {})
        right = [fmt_ratio(d.get("steadfast"), d.get(p)) if p in have and "steadfast" in have
                 and (d.get(p) or 0) > 0 and (d.get("steadfast") or 0) >= 0 else "n/a"
                 for p in main_cols if p != "steadfast"]
        if all(x == "n/a" for x in right):
            continue
        L.append(f"| {label} | " + " | ".join(["—"] * len(main_cols)) + " | " + " | ".join(right) + " |")
    L.append("")
    L.extend(variants_section(have))
    L.extend(translate_section())
    L.extend(resume_section())
    L.extend(held_section())

    # Goals.
    L.append("## Goals\n")
    g = []
    a99 = R.get("lat_p99_added", {}).get("steadfast")
    g.append(("added p99 latency < 1 ms at %d req/s" % K["RATE"], None if a99 is None else a99 < 1000,
              fmt_us(a99)))
    rs, rn, rl = (R.get("rps", {}).get(x) for x in ("steadfast", "nginx", "litellm"))
    g.append(("throughput ≥ nginx", None if rs is None or rn is None else rs >= rn,
              f"{fmt_ratio(rs, rn)} of nginx"))
    g.append(("throughput ≥ 10× LiteLLM", None if rs is None or rl is None else rs >= 10 * rl,
              f"{fmt_ratio(rs, rl)} of LiteLLM"))
    ri = R.get("rss_idle", {}).get("steadfast")
    g.append(("idle RSS < 20 MB", None if ri is None else ri < 20e6, mib(ri)))
    r10 = R.get("rss_10k", {}).get("steadfast")
    g.append(("10k open SSE streams < 200 MB", None if r10 is None else r10 < 200e6,
              f"{mib(r10)}" + ("" if n >= 10000 else f", extrapolated from {n} streams: "
                                                      f"{mib(R.get('rss_streams', {}).get('steadfast'))}")))
    L.append("| goal | met | steadfast |")
    L.append("|---|---|---|")
    for goal, ok, val in g:
        L.append(f"| {goal} | {'yes' if ok else ('n/a' if ok is None else '**no**')} | {val} |")
    L.append("")

    L.append("## Scenarios\n")
    L.append(SCENARIOS_TEXT.format(**K, n=n, **{f"port_{k}": v for k, v in PORT.items()}))
    L.append("## What each peer can and cannot do here\n")
    L.append(PEER_NOTES)
    if R.get("nginx_default_rss"):
        NOTES.append(f"nginx's idle RSS above is with worker_connections {nofile() - 100} (needed for the open-streams "
                     f"test; nginx preallocates its connection table); the same config with the default 1024 has an "
                     f"idle RSS of {mib(R['nginx_default_rss'])}.")
    if NOTES:
        L.append("## Notes from this run\n")
        for x in NOTES:
            L.append(f"- {x}")
        L.append("")
    L.append("## Exact commands\n")
    L.append("Per scenario, the command for each peer differs only in the URL (table below).\n")
    seen = set()
    L.append("```")
    for scen, c in COMMANDS:
        c = c.replace(ROOT + "/", "").replace(oha_bin(), "oha").replace(KEY, "$KEY")
        if scen != "upstream":
            c = re.sub(r"http://127\.0\.0\.1:\d+\S*", "$URL", c)
            c = re.sub(r"--addr 127\.0\.0\.1:\d+ --path \S+", "--addr $ADDR --path $PATH", c)
        if (scen, c) in seen:
            continue
        seen.add((scen, c))
        L.append(f"# {scen}\n{c}")
    L.append("```")
    L.append("\n`$URL` (or `$ADDR` + `$PATH`) per peer and scenario:\n")
    L.append("| peer | json (throughput, latency, CPU, flood) | sse | hold | fo_dead | fo_429 | tr_plain | tr |")
    L.append("|---|---|---|---|---|---|---|---|")
    for name, peer in peers.items():
        L.append(f"| {name} | " + " | ".join(
            peer.url(k) if peer.supports(k) and (k not in ("tr", "tr_plain") or name == "steadfast") else "—"
            for k in ("json", "sse", "hold", "fo_dead", "fo_429", "tr_plain", "tr")) + " |")
    L.append(f"\nThe resumption scenario's steadfast instance (`out/conf/steadfast-resume.yaml`) listens on "
             f":{PORT['steadfast-resume']}; its `$PATH` is `/resume/v1/chat/completions`.")
    L.append("\n`$KEY` is a fixed dummy bearer token (LiteLLM's master key; passed through, unused, by the others). "
             "LiteLLM gets the same bodies; their `model` names select its deployments.")
    L.append("\nPeer configurations are written to `bench/out/conf/` by the run (generated by `bench/bench.py`).\n")
    write(RESULTS, "\n".join(L))
    summary = readme_summary(peers, m, g, finished)
    write(os.path.join(OUT, "summary.md"), summary)
    if os.environ.get("UPDATE_README", "") not in ("", "0"):
        update_readme(summary)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"knobs": K, "results": R, "notes": NOTES, "machine": m, "versions": v}, f, indent=1, default=str)
    log(f"wrote {RESULTS}")


def variants_section(have):
    """steadfast against itself built or configured otherwise: the allocator, work stealing, tracing."""
    vs = [x for x in VARIANTS if x in have]
    if not vs or "steadfast" not in have:
        return []
    L = ["### steadfast variants\n",
         "The same figures for steadfast built or configured otherwise, each against the `steadfast` column of this "
         "run (Δ: variant minus steadfast; for throughput higher is better, for everything else lower). "
         "`steadfast-glibc`: built with `--no-default-features` (the system allocator, glibc malloc, instead of "
         "jemalloc). `steadfast-nosteal`: `server.work_stealing: false`. `steadfast-otel`: tracing on "
         "(`telemetry.otlp_endpoint`, sample_ratio 1.0, every request's spans exported to a local OTLP/gRPC sink); "
         "the `steadfast` column is the same binary with tracing off.\n"]
    rows = [("throughput, req/s", "rps", "rps"), ("added latency p50", "lat_p50_added", "us"),
            ("added latency p99", "lat_p99_added", "us"), ("added SSE first-event p50", "sse_p50_added", "us"),
            ("CPU per 1k requests", "cpu_ms_per_1k", "ms"), ("idle RSS", "rss_idle", "mib"),
            ("RSS with all flood connections open", "flood_peak", "mib"),
            ("RSS after the connection flood", "flood_after", "mib"),
            ("  ÷ idle RSS", "flood_vs_idle", "times"),
            ("RSS per open stream", "per_stream", "kib"),
            ("failover extra p50, refused", "fo_dead_p50_extra", "us")]

    def fmt(v, kind):
        if v is None:
            return "n/a"
        return {"rps": lambda: f"{v:,.0f}", "us": lambda: fmt_us(v), "ms": lambda: f"{v:.1f} ms",
                "mib": lambda: mib(v), "kib": lambda: f"{v / 1024:.1f} KiB", "times": lambda: f"{v:.2f}×"}[kind]()

    def delta(v, b, kind):
        if v is None or b is None:
            return ""
        d = v - b
        sign = "+" if d >= 0 else "−"
        pct = f", {sign}{abs(d) / abs(b):.0%}" if b and kind not in ("times",) else ""
        return f" (Δ {sign}{fmt(abs(d), kind)}{pct})"

    L.append("| figure | steadfast | " + " | ".join(vs) + " |")
    L.append("|---|---|" + "---|" * len(vs))
    for label, fig, kind in rows:
        d = R.get(fig, {})
        if not any(d.get(x) is not None for x in ["steadfast"] + vs):
            continue
        L.append(f"| {label} | {fmt(d.get('steadfast'), kind)} | "
                 + " | ".join(fmt(d.get(x), kind) + delta(d.get(x), d.get("steadfast"), kind) for x in vs) + " |")
    L.append("")
    if "steadfast-nosteal" in vs and (machine()["cores"] or 0) <= 4:
        L.append(f"Work stealing on {machine()['cores']} cores with {K['PROXY_THREADS']} proxy threads: the load "
                 "generator and the upstreams share the same cores, so whichever thread is free is rarely idle for "
                 "long and stealing has little to balance; the difference it makes (either way) shows on more cores "
                 "with uneven connections.\n")
    return L


def translate_section():
    if "tr_p50" not in R:
        return []
    d = lambda fig: R.get(fig, {}).get("steadfast")   # noqa: E731
    rows = [("first event p50 (time to the first whole SSE event)", "p50", "us"),
            ("first event p99", "p99", "us"), ("whole stream p50", "end_p50", "us"),
            ("CPU per stream", "cpu_stream", "us"), ("CPU per upstream event", "cpu_event", "us2")]

    def f(v, kind):
        if v is None:
            return "n/a"
        return f"{v:.2f} µs" if kind == "us2" else fmt_us(v)

    L = ["### Translated streams (steadfast only)\n",
         f"An Anthropic Messages client (`/tr/v1/messages`, a `translate: true` route) and an OpenAI Chat client "
         f"(`/tr-plain/...`, passed through) against the same OpenAI Chat provider (sfbench upstream: "
         f"{K['TR_EVENTS']} chunks {K['TR_EVENT_DELAY_MS']} ms apart, then `[DONE]`), {K['TR_N']} streams each per "
         f"round, one after another on a keep-alive connection. CPU: steadfast's utime+stime over the run divided "
         f"by the streams (warm-up included) and by the chunks the provider sent ({K['TR_EVENTS']} + `[DONE]` per "
         "stream). nginx, HAProxy, LiteLLM and Pingora do not translate between dialects: n/a.\n",
         "| figure | untranslated (OpenAI → OpenAI) | translated (Anthropic client → OpenAI provider) | added by "
         "translation |", "|---|---|---|---|"]
    for label, key, kind in rows:
        a, b = d(f"tr_plain_{key}"), d(f"tr_{key}")
        L.append(f"| {label} | {f(a, kind)} | {f(b, kind)} | "
                 f"{f(b - a, kind) if a is not None and b is not None else 'n/a'} |")
    L.append(f"| streams ok / errors | {d('tr_plain_ok')} / {d('tr_plain_errors')} | {d('tr_ok')} / "
             f"{d('tr_errors')} | |")
    L.append("")
    return L


def resume_section():
    if "resume_gap_p50" not in R:
        return []
    d = lambda fig: R.get(fig, {}).get("steadfast")   # noqa: E731
    L = ["### Stream resumption (steadfast only)\n",
         f"A route whose first provider cuts every stream (TCP reset) where its token {K['RESUME_CUT_AFTER'] + 1} "
         f"was due (tokens {K['RESUME_EVENT_DELAY_MS']} ms apart) and whose second provider answers the continuation "
         "(the original request with the delivered text as an assistant prefill; `prefill: true`, as an OpenAI-dialect "
         "provider needs) with its own tokens; "
         "`retry.resume_streams: true` on a steadfast instance of its own (resumption keeps each stream's request "
         "body and follows its text, so the other columns run without it). `sfbench gap` times at the client the "
         "gap between the last token before the cut and the first token of the continuation, and the same stream's "
         "median gap between tokens before the cut (the provider's pace); extra = gap minus that pace, per stream. "
         f"{K['RESUME_N']} streams per round. Other peers cannot continue a cut stream: n/a.\n",
         "| figure | steadfast |", "|---|---|",
         f"| gap after the cut p50 | {fmt_us(d('resume_gap_p50'))} |",
         f"| gap after the cut p99 | {fmt_us(d('resume_gap_p99'))} |",
         f"| normal gap between tokens p50 | {fmt_us(d('resume_normal_p50'))} |",
         f"| extra time to the next token p50 | {fmt_us(d('resume_extra_p50'))} |",
         f"| extra time to the next token p99 | {fmt_us(d('resume_extra_p99'))} |",
         f"| streams resumed / not resumed or failed | {d('resume_ok')} / {d('resume_failed')} |",
         f"| `steadfast_stream_resumes_total{{result=\"resumed\"}}` (warm-up included) | "
         f"{'n/a' if d('resume_metric') is None else int(d('resume_metric'))} |", ""]
    return L


def held_section():
    h = R.get("held")
    if not h:
        return []
    b = lambda k: f"{h.get(k, 0):,} B"   # noqa: E731
    return ["### Bytes held per stream before commit\n",
            "steadfast holds a 2xx stream's status, headers and setup events until its first content-bearing event "
            "(a stream that fails before it can still go to the next provider), then writes them at once. What it "
            "holds per stream, **computed** from the sizes of the events (`sfbench shapes`), not measured: the SSE "
            "bytes as read from the provider, without HTTP chunk framing. The response head is held too (as a parsed header "
            "map); other peers hold nothing.\n",
            "| stream shape | setup events held until the first content |", "|---|---|",
            f"| this benchmark's (first event: role and first token) | {b('bench_setup_bytes')} (committed on the "
            f"first event, {b('bench_first_event_bytes')}) |",
            f"| OpenAI Chat with a role-only first chunk (the previous bench shape) | {b('role_only_chunk_bytes')} |",
            f"| Anthropic Messages: `message_start` + `ping` | {b('anthropic_setup_bytes')} "
            f"({b('anthropic_message_start_bytes')} + {b('anthropic_ping_bytes')}) |",
            f"| upstream response head (sfbench's) | {b('upstream_head_bytes')} |",
            "",
            "A typical Anthropic stream sends `ping` after its first `content_block_start`, which already commits: "
            f"then only `message_start` ({b('anthropic_message_start_bytes')}) is held. The hold is bounded at "
            "64 KiB per stream whatever the provider sends.\n"]


README_START = "<!-- bench:summary:start -->"
README_END = "<!-- bench:summary:end -->"


def readme_summary(peers, m, goals, finished):
    """The headline table for README's Benchmark section (the main peers only)."""
    cols = [p for p in MAIN_PEERS]
    have = set(peers)

    def v(fig, name, kind):
        x = R.get(fig, {}).get(name)
        if name not in have or x is None:
            return "n/a"
        return {"rps": lambda: f"{x:,.0f}", "us": lambda: fmt_us(x), "mib": lambda: mib(x),
                "ms": lambda: f"{x:.0f} ms" if x >= 100 else f"{x:.1f} ms"}[kind]()

    def both(fig1, fig2, name):
        def one(fig):
            if no_failover(fig, name):
                return "no failover"
            return v(fig, name, "us")
        return f"{one(fig1)} / {one(fig2)}"

    def vs(fig, name, higher_better):
        a, b = R.get(fig, {}).get("steadfast"), R.get(fig, {}).get(name)
        if name == "steadfast" or name not in have:
            return "—" if name == "steadfast" else "n/a"
        return fmt_ratio(a, b)

    n = R.get("streams_n") or 0
    rows = [
        ("Throughput, req/s (closed loop)", [v("rps", c, "rps") for c in cols]),
        ("  steadfast ÷ peer", [vs("rps", c, True) for c in cols]),
        (f"Added latency p50 / p99 at {K['RATE']} req/s", [both("lat_p50_added", "lat_p99_added", c) for c in cols]),
        ("Added SSE first-event latency p50", [v("sse_p50_added", c, "us") for c in cols]),
        ("CPU per 1k requests", [v("cpu_ms_per_1k", c, "ms") for c in cols]),
        ("Idle RSS", [v("rss_idle", c, "mib") for c in cols]),
        (f"RSS with {n:,} open SSE streams", [v("rss_streams", c, "mib") for c in cols]),
        ("Failover extra p50: refused / 429", [both("fo_dead_p50_extra", "fo_429_p50_extra", c) for c in cols]),
    ]
    L = [README_START, ""]
    L.append(f"From `{'QUICK=1 ' if QUICK else ''}bench/run.sh` on {finished:%Y-%m-%d}: {m['cpu']}, {m['cores']} cores, "
             f"Linux {m['kernel']}" + (" — **a noisy 2-core machine shared with other work (load average "
                                       f"{m['load_at_start']} at start); the load generator, the upstream and the "
                                       "proxy share the same 2 cores. Indicative only.**" if (m["cores"] or 0) <= 2 else "."))
    L.append("Full table, versions and exact commands: [`bench/RESULTS.md`](bench/RESULTS.md).\n")
    L.append("| | " + " | ".join(DISPLAY.get(c, c) for c in cols) + " |")
    L.append("|---|" + "---|" * len(cols))
    for label, cells in rows:
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Goals: " + "; ".join(f"{goal} — {'met' if ok else ('n/a' if ok is None else '**not met**')} ({val})"
                                   for goal, ok, val in goals) + ".")
    L.append("")
    L.append(README_END)
    return "\n".join(L)


def update_readme(summary):
    path = os.path.join(ROOT, "README.md")
    text = open(path).read()
    if README_START in text and README_END in text:
        a, b = text.index(README_START), text.index(README_END) + len(README_END)
        write(path, text[:a] + summary + text[b:])
        log("updated the benchmark summary in README.md")
    else:
        log("README.md has no benchmark summary markers; not updated (see out/summary.md)")


SCENARIOS_TEXT = """\
- **Upstream.** nginx (2 workers) returns a canned chat-completion JSON on :{port_up} and a 429 on
  :{port_up429}; nothing listens on :{port_dead} (connection refused). `sfbench upstream` (bench/tools, tokio)
  serves SSE on :{port_sse}: the first event at once, then {SSE_EVENTS}-1 more {SSE_EVENT_DELAY_MS} ms apart, so a proxy
  that buffers shows up as a late first event; a second instance holds streams open (one event, then silence) for
  the memory figure. The first event carries the role *and* the first token (`"delta":{{"role":"assistant",
  "content":"tok0 "}}`), as providers send it with or right after the role. This matters for steadfast, which holds
  a 2xx stream (status, headers, setup events) until its first content-bearing event so that a stream failing
  before any content can still go to the next provider: with a role-only first chunk (this benchmark's shape
  before) the first-event figure measured that hold (`{SSE_EVENT_DELAY_MS}` ms, until the next chunk) instead of the
  proxy, and the open-streams test never got a first event through steadfast. Every peer gets the same stream.
  The `direct` column is the same load generator straight to these upstreams.
- **Peers**, each a pass-through to the same upstreams with {PROXY_THREADS} threads/workers: steadfast
  (`serve -c out/conf/steadfast.yaml`, access log off), nginx (`proxy_buffering off`, upstream keepalive pool,
  `proxy_next_upstream ... http_429 ... non_idempotent`, backup server for priority failover), HAProxy (http mode,
  `http-reuse always`, `retries 2`, `option redispatch 1`, `balance first`), LiteLLM proxy (`litellm --config`,
  {LITELLM_WORKERS} uvicorn worker(s), `openai/` models with `api_base` at the upstream, fallbacks to another model group for
  failover, verbose/message/spend logging off, a master key as its start-up check requires, and
  `AIOHTTP_CONNECTOR_LIMIT[_PER_HOST]=20000` so its default 500 upstream connections per host do not cap
  the open-streams test).
- **Throughput at saturation**: `wrk -t{WRK_THREADS} -c{CONNS} -d{DURATION}s` POSTing a small chat request (non-streaming).
- **Added latency**: `oha -q {RATE} --latency-correction -c{LAT_CONNS} -z{DURATION}s` (open loop; latency counted
  from when each request was due, so a stall is not hidden by coordinated omission); added = proxy minus direct,
  per percentile.
- **SSE first event**: `sfbench ttfe` sends streaming requests one after another over a keep-alive connection
  and times the first complete SSE event (`\\n\\n`) and the end of the stream; a stream without the first
  token (`tok0`) counts as an error. Added = proxy minus direct.
- **CPU per 1k requests**: utime+stime of the proxy's process tree from `/proc/PID/stat`, before and after
  `oha -n {CPU_REQUESTS} -c{CONNS}`; the direct column is the upstream nginx's own CPU.
- **Memory**: RSS (sum over the process tree, from `/proc/PID/statm`) just after start, before the streams test,
  and while `sfbench hold` keeps {n} streaming requests open, each having received its first event (through
  steadfast: committed streams, past the hold).
- **Connection flood** (does memory come back?): `sfbench flood` opens {FLOOD_CONNS} keep-alive connections
  ({FLOOD_PARALLEL} connecting at a time), each makes one non-streaming request and reads the answer, and all stay
  open until every one has been answered (RSS "with all open"); then all are closed at once and the peer's RSS is
  polled every 0.5 s for up to {FLOOD_SETTLE_S} s, stopping once it has been flat (within 1%) for 3 s. Reported:
  the last RSS, against idle RSS (just after start) and against just before the flood, and the open file
  descriptors then (what a proxy keeps on purpose: listeners and its pool of idle upstream connections).
  steadfast returns freed memory through jemalloc's background purge (`dirty_decay_ms:1000`); the
  `steadfast-glibc` column is the same sources with the system allocator.
- **Failover cost**: `oha -q {FO_RATE} --latency-correction -c16 -z{FO_DURATION}s` on the normal route and on a route
  whose first provider refuses connections or answers 429 and whose second is the normal upstream. Passive
  health is off in every peer (steadfast `eject_after_failures` huge and 1 ms cooldown, nginx `max_fails=0`,
  HAProxy without checks) so each request pays for one failover; with defaults each proxy would stop trying
  the bad provider after a few failures (steadfast: 3 failures, or the Retry-After cooldown for 429), and the
  steady-state cost would be near zero. Extra = failover route minus the same proxy's normal route.
- **steadfast variants** (own columns, each its own process with the same routes, selectable with `PEERS`):
  `steadfast-glibc` (built with `cargo build --release --no-default-features`: no jemalloc), `steadfast-nosteal`
  (`server.work_stealing: false`: each of the {PROXY_THREADS} threads runs its connections start to end, no
  cross-thread task stealing), `steadfast-otel` (tracing on: `telemetry.otlp_endpoint` at `sfbench otlp-sink`,
  sample_ratio 1.0). See "steadfast variants" above.
- **Translated streams**, **stream resumption** and **held bytes**: steadfast only; described with their tables
  above.
"""

PEER_NOTES = """\
- **steadfast** fails over on network errors, timeouts, 429 (honouring Retry-After as a cooldown), 5xx, 401 and
  403, replaying the whole body.
- **nginx** fails over on connection errors, timeouts and the listed statuses (`http_429` since 1.11.13); it
  cannot fail over on 401, and a POST that was already sent is only retried with `non_idempotent`. Retry-After
  is not understood.
- **HAProxy 2.6** retries on connection failure and on 401/403/404/408/425/5xx via `retry-on` (L7 retries only
  for requests that fit in one buffer); it **cannot retry on 429**, so the 429 row shows the 429 reaching the
  client. No Retry-After handling.
- **pingora** (reference column, not a competitor) is Pingora 0.9's stock `http_proxy_service` with an
  `upstream_peer` that picks the upstream by path and nothing else (`bench/pingora-baseline`): no failover, no
  metrics, no request-body buffering. It shows how much of steadfast's cost is Pingora itself.
- **LiteLLM** falls back to another model group (`fallbacks`) on errors, including 429 (RateLimitError); it
  re-encodes every response (parses the upstream JSON/SSE and serialises its own), which is part of its cost.
"""

LOAD_AT_START = ""


def main():
    global LOAD_AT_START
    for d in (OUT, RUN, RAW, CONF, LOGS):
        os.makedirs(d, exist_ok=True)
    for d in (RAW, LOGS):
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
    LOAD_AT_START = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = datetime.datetime.utcnow()
    log(f"knobs: {K} peers: {PEERS}")
    peers = start_all()
    time.sleep(3)
    R["rss_idle"] = {n: rss_bytes(p.pid) for n, p in peers.items() if n != "direct"}
    R["pss_idle"] = {n: pss_bytes(p.pid) for n, p in peers.items() if n != "direct"}
    for n, v in R["rss_idle"].items():
        log(f"  idle RSS {n:10s} {v / 2**20:.1f} MiB")
    only = SCENARIOS
    if "throughput" in only:
        scenario_throughput(peers)
    if "latency" in only:
        scenario_latency(peers)
    if "sse" in only:
        scenario_sse(peers)
    if "cpu" in only:
        scenario_cpu(peers)
    if "flood" in only:
        scenario_flood(peers)
    if "failover" in only:
        scenario_failover(peers)
    if "streams" in only:
        scenario_streams(peers)
    if "translate" in only:
        scenario_translate(peers)
    if "resume" in only:
        scenario_resume(peers)
    if "held" in only:
        scenario_held()
    R["rss_end"] = {n: rss_bytes(p.pid) for n, p in peers.items() if n != "direct"}
    for name, p in peers.items():
        if p.proc and p.proc.poll() is not None:
            NOTES.append(f"{name} exited during the run (code {p.proc.returncode}); see out/logs/")
    finished = datetime.datetime.utcnow()
    global MACHINE, VERSIONS
    MACHINE, VERSIONS = machine(), versions()
    with open(os.path.join(OUT, "state.json"), "w") as f:
        json.dump({"knobs": K, "quick": QUICK, "peers_asked": PEERS, "scenarios": SCENARIOS, "peers": list(peers),
                   "R": R, "notes": NOTES,
                   "commands": COMMANDS, "started": started.isoformat(), "finished": finished.isoformat(),
                   "machine": MACHINE, "versions": VERSIONS}, f, indent=1, default=str)
    report(peers, started, finished)


def report_only():
    """Re-render RESULTS.md (and the README summary) from out/state.json without measuring again."""
    global QUICK, PEERS, MACHINE, VERSIONS
    st = json.load(open(os.path.join(OUT, "state.json")))
    K.update(st["knobs"])
    global SCENARIOS  # noqa: PLW0603
    QUICK, PEERS, MACHINE, VERSIONS = st["quick"], st["peers_asked"], st["machine"], st.get("versions")
    SCENARIOS = st.get("scenarios", SCENARIOS)
    R.update(st["R"])
    NOTES.extend(st["notes"])
    COMMANDS.extend(tuple(c) for c in st["commands"])
    peers = {n: Peer(n, PORT.get(n, PORT["up"])) for n in st["peers"]}
    report(peers, datetime.datetime.fromisoformat(st["started"]), datetime.datetime.fromisoformat(st["finished"]))


if __name__ == "__main__":
    if sys.argv[1:] == ["--report-only"]:
        report_only()
    else:
        main()
