//! The edge as an attacker sees it: request paths that try to
//! leave their route or the provider's base path (over HTTP/1.1, absolute
//! form and h2c), client tokens smuggled to a provider in several headers
//! at once, and the bare probes clients send on start.

mod common;

use bytes::Bytes;
use common::http::{anthropic_body, Conn, Request, Response};
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const PROVIDER_KEY: &str = "sk-provider-canary-3f9a1c";
const TOKEN: &str = "sf-client-token-8d2e6b4a17";
const TOKEN_2: &str = "sf-client-token-second-90c3";
const CLIENT_PROVIDER_KEY: &str = "sk-clients-own-key-5b7d";

// ---------------------------------------------------------------- helpers

/// Start the proxy and wait until its proxy listener accepts too (`/ready`
/// can answer a moment before it is bound).
async fn start(b: ProxyBuilder) -> Proxy {
    let px = b.start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(px.proxy).await.is_err() {
        assert!(Instant::now() < deadline, "proxy listener never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    px
}

/// Send `head` (request line and headers, without the final empty line)
/// and a JSON body as raw bytes: the request target goes out exactly as
/// written, which no HTTP client library allows.
async fn raw(addr: SocketAddr, head: &str) -> Response {
    let body = anthropic_body("m", false);
    let mut c = Conn::connect(addr).await;
    let bytes = [
        head.as_bytes(),
        format!(
            "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        &body,
    ]
    .concat();
    c.stream.write_all(&bytes).await.expect("write request");
    c.read_response(false).await
}

async fn post_raw_target(px: &Proxy, target: &str) -> Response {
    raw(
        px.proxy,
        &format!("POST {target} HTTP/1.1\r\nhost: {}", px.proxy),
    )
    .await
}

/// A provider whose base_url has a path: nothing may reach outside /prefix.
async fn prefixed_provider(name: &str) -> (MockServer, Proxy) {
    let m = anthropic("p1").await;
    let yaml = format!(
        "providers:\n  - name: p1\n    api: anthropic\n    base_url: \"http://{}/prefix\"\n    api_key_env: SEC_PROVIDER_KEY\nroutes:\n  - {{ name: messages, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        m.addr()
    );
    let px = start(Proxy::builder(name, &yaml).env("SEC_PROVIDER_KEY", PROVIDER_KEY)).await;
    (m, px)
}

/// What a request target must lead to.
#[derive(Debug)]
enum Want {
    /// Forwarded, with exactly this target upstream.
    Upstream(&'static str),
    /// steadfast's own 404: no route for the normalised path.
    NoRoute,
    /// steadfast's own 400 (class `request`).
    Refused,
}

/// Check one response against `want`; `before` is the mock's request count
/// before it was sent.
fn check(target: &str, r: &Response, want: &Want, m: &MockServer, before: usize) {
    match want {
        Want::Upstream(path) => {
            // The mock knows no /prefix paths and answers 404 itself: the
            // provider header says who answered.
            assert_eq!(
                r.header("x-steadfast-provider"),
                Some("p1"),
                "{target}: {}",
                r.text()
            );
            assert_eq!(m.requests(), before + 1, "{target}");
            let rec = m.recorded().pop().expect("recorded");
            assert_eq!(rec.path, *path, "{target}");
            assert_eq!(rec.header("x-api-key"), Some(PROVIDER_KEY), "{target}");
        }
        Want::NoRoute | Want::Refused => {
            let status = if matches!(want, Want::NoRoute) {
                404
            } else {
                400
            };
            assert_eq!(r.status, status, "{target}: {}", r.text());
            assert_eq!(r.header("x-steadfast-provider"), Some("none"), "{target}");
            assert_eq!(
                r.header("x-steadfast-error-class"),
                Some("request"),
                "{target}"
            );
            // The dialect is guessed from the path; both name the problem.
            let err = &r.json()["error"];
            assert!(
                err["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{target}"
            );
            if status == 400 {
                assert_eq!(err["type"], "invalid_request_error", "{target}");
                let m = err["message"].as_str().unwrap_or_default();
                assert!(m.starts_with("invalid request path"), "{target}: {m}");
            }
            assert_eq!(m.requests(), before, "{target} reached the provider");
        }
    }
}

/// Nothing the mock ever saw is outside the route under /prefix, or holds
/// anything an upstream could resolve differently.
fn assert_all_confined(m: &MockServer) {
    for rec in m.recorded() {
        let path = rec.path.split('?').next().unwrap_or_default();
        let lower = path.to_ascii_lowercase();
        assert!(
            path.starts_with("/prefix/v1/messages"),
            "escaped: {}",
            rec.path
        );
        for bad in ["..", "//", "/./", "%2e", "%2f", "%5c", "\\"] {
            assert!(!lower.contains(bad), "{bad} went upstream: {}", rec.path);
        }
    }
}

/// The path cases shared by HTTP/1.1 and h2c; the escapes first, so that
/// without normalisation the first failure is an escape.
const PATH_CASES: &[(&str, Want)] = &[
    ("/v1/messages/../../v1/models", Want::NoRoute),
    ("/v1/messages/%2e%2e/%2e%2e/admin", Want::NoRoute),
    ("/v1/messages/%2E%2E/%2e%2E/_mock/behavior", Want::NoRoute),
    ("/v1/messages/.%2e/x", Want::NoRoute),
    ("/v1/messages/%2e./x", Want::NoRoute),
    ("/v1/messagesX", Want::NoRoute),
    ("/v1/messages_evil/x", Want::NoRoute),
    ("//", Want::NoRoute),
    ("/v1/messages/..%2f..%2fx", Want::Refused),
    ("/v1/messages/..%2F..%2Fx", Want::Refused),
    ("/v1/messages%2fx", Want::Refused),
    ("/v1/messages%5Cx", Want::Refused),
    ("/v1/messages%5c..%5cx", Want::Refused),
    ("/v1/messages\\..\\x", Want::Refused),
    ("/v1/messages/../../../x", Want::Refused),
    ("/v1/messages/%2e%2e/%2e%2e/%2e%2e/x", Want::Refused),
    ("/v1/messages/..;/x", Want::Refused),
    ("/v1/messages/%zz", Want::Refused),
    ("/v1/messages/%", Want::Refused),
    ("/v1/messages/%00", Want::Refused),
    ("/v1/messages/%0d%0ax-evil:1", Want::Refused),
    ("/v1/messages/%c0%ae%c0%ae/x", Want::Refused),
    ("/v1/messages/%252e%252e/x", Want::Refused),
    ("/v1/messages", Want::Upstream("/prefix/v1/messages")),
    (
        "/v1/messages?beta=true",
        Want::Upstream("/prefix/v1/messages?beta=true"),
    ),
    (
        "/v1/messages/./count_tokens?beta=true&x=../y",
        Want::Upstream("/prefix/v1/messages/count_tokens?beta=true&x=../y"),
    ),
    (
        "/v1/messages/%2E%2e/%2e./v1/messages",
        Want::Upstream("/prefix/v1/messages"),
    ),
    ("//v1//messages", Want::Upstream("/prefix/v1/messages")),
    ("/v1/%6Dessages", Want::Upstream("/prefix/v1/messages")),
    ("/v1/messages/x/..", Want::Upstream("/prefix/v1/messages/")),
];

// ------------------------------------------------------------------ paths

#[tokio::test]
async fn paths_cannot_escape_the_route_or_the_base_path() {
    let (m, px) = prefixed_provider("sec-paths").await;
    for (target, want) in PATH_CASES {
        let before = m.requests();
        let r = post_raw_target(&px, target).await;
        check(target, &r, want, &m, before);
    }
    // Raw control bytes and spaces: refused, by Pingora's parser or by us.
    for target in [
        "/v1/messages/\x01",
        "/v1/messages/\x00/../x",
        "/v1/messages /../x",
    ] {
        let before = m.requests();
        let r = post_raw_target(&px, target).await;
        // Pingora percent-encodes a space in the target before anyone sees
        // it ("/v1/messages%20/../x"), which then normalises to a path no
        // route serves: a 404, or a 400 where the parser refused first.
        assert!(matches!(r.status, 400 | 404), "{target:?}: {}", r.status);
        assert_eq!(m.requests(), before, "{target:?} reached the provider");
    }
    assert_all_confined(&m);
}

#[tokio::test]
async fn absolute_form_targets_are_normalised_too() {
    let (m, px) = prefixed_provider("sec-absolute").await;
    let a = px.proxy;
    let cases = [
        (format!("http://{a}/v1/messages/../../x"), Want::NoRoute),
        (
            format!("http://{a}/v1/messages/../messages"),
            Want::Upstream("/prefix/v1/messages"),
        ),
        (
            format!("http://{a}/v1/messages/%2e%2e/%2e%2e/v1/models"),
            Want::NoRoute,
        ),
        (format!("http://{a}/v1/messages/..%2f..%2fx"), Want::Refused),
        (format!("http://{a}/v1/messages/../../../x"), Want::Refused),
    ];
    for (target, want) in &cases {
        let before = m.requests();
        let r = post_raw_target(&px, target).await;
        check(target, &r, want, &m, before);
    }
    assert_all_confined(&m);
}

#[tokio::test]
async fn the_access_log_and_metrics_see_the_normalised_path() {
    let (m, px) = prefixed_provider("sec-log").await;
    let r = raw(
        px.proxy,
        &format!(
            "POST /v1/messages/%2e/../messages/.?beta=1 HTTP/1.1\r\nhost: {}\r\nx-request-id: sec-norm",
            px.proxy
        ),
    )
    .await;
    assert_eq!(r.header("x-steadfast-provider"), Some("p1"));
    assert_eq!(m.recorded()[0].path, "/prefix/v1/messages/?beta=1");
    let ev = px
        .wait_event("request", |v| v["request_id"] == "sec-norm")
        .await;
    assert_eq!(ev["path"], "/v1/messages/");
    assert_eq!(ev["route"], "messages");

    let r = raw(
        px.proxy,
        &format!(
            "POST /v1/messages/..%2fx HTTP/1.1\r\nhost: {}\r\nx-request-id: sec-bad",
            px.proxy
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    let ev = px
        .wait_event("request", |v| v["request_id"] == "sec-bad")
        .await;
    assert_eq!(ev["class"], "request");
    assert_eq!(ev["outcome"], "request_error");
    assert!(ev["route"].is_null());
    let n = poll_metric(&px, "none", "request_error", 1.0).await;
    assert_eq!(n, 1.0);
}

// ------------------------------------------------------------------- h2c

/// One request over h2c with prior knowledge (what steadfast's proxy
/// listener speaks besides HTTP/1.1); `:path` is sent exactly as given.
async fn h2c(addr: SocketAddr, method: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.expect("h2 ready");
    let req = ::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(())
        .expect("request");
    let (resp, mut send) = client.send_request(req, false).expect("send request");
    send.send_data(Bytes::from(anthropic_body("m", false)), true)
        .expect("send body");
    let resp = tokio::time::timeout(Duration::from_secs(30), resp)
        .await
        .expect("h2 response in time")
        .expect("h2 response");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("h2 body");
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    (status, headers, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test]
async fn h2c_paths_are_normalised_like_http1() {
    let (m, px) = prefixed_provider("sec-h2c").await;
    for (target, want) in PATH_CASES {
        let before = m.requests();
        let (status, headers, body) = h2c(px.proxy, "POST", target).await;
        let r = Response {
            status,
            headers,
            body: body.into_bytes(),
            complete: true,
            pieces: Vec::new(),
            sent_at: Instant::now(),
        };
        check(target, &r, want, &m, before);
    }
    assert_all_confined(&m);
}

// ----------------------------------------------------------- client tokens

async fn passthrough_with_auth(name: &str) -> (MockServer, Proxy) {
    let m = anthropic("p1").await;
    let yaml = format!(
        "{}client_auth:\n  tokens_env: SEC_CLIENT_TOKENS\n",
        one_route("/v1/messages", "anthropic", m.addr())
    );
    let px =
        start(Proxy::builder(name, &yaml).env("SEC_CLIENT_TOKENS", &format!("{TOKEN},{TOKEN_2}")))
            .await;
    (m, px)
}

fn assert_no_token_upstream(m: &MockServer) {
    for rec in m.recorded() {
        for (k, v) in &rec.headers {
            for t in [TOKEN, TOKEN_2] {
                assert!(!v.contains(t), "client token forwarded in {k}: {v}");
            }
        }
    }
}

/// Send one authenticated request per header set; each must succeed and
/// reach the provider with no token in any header.
async fn send_each(px: &Proxy, m: &MockServer, cases: Vec<Vec<(&'static str, String)>>) {
    for (i, headers) in cases.into_iter().enumerate() {
        let mut req = Request::post("/v1/messages", anthropic_body("m", false));
        for (k, v) in &headers {
            req = req.header(k, v.clone());
        }
        let r = px.send(req).await;
        assert_eq!(r.status, 200, "case {i} {headers:?}: {}", r.text());
        assert_eq!(
            m.recorded().len(),
            i + 1,
            "case {i} did not reach the provider"
        );
        assert_no_token_upstream(m);
    }
}

#[tokio::test]
async fn client_token_in_several_headers_never_reaches_a_passthrough_provider() {
    let (m, px) = passthrough_with_auth("sec-tokens").await;
    send_each(
        &px,
        &m,
        vec![
            vec![
                ("authorization", format!("Bearer {TOKEN}")),
                ("x-api-key", TOKEN.to_string()),
            ],
            vec![
                ("x-api-key", TOKEN.to_string()),
                ("api-key", TOKEN.to_string()),
            ],
            vec![
                ("authorization", format!("Bearer {TOKEN}")),
                ("x-api-key", TOKEN_2.to_string()),
                ("api-key", TOKEN.to_string()),
            ],
            vec![
                ("authorization", format!("Bearer {TOKEN}")),
                ("cookie", format!("session={TOKEN_2}")),
                ("x-forwarded-authorization", format!("Bearer {TOKEN}")),
                ("x-api-key", format!("{TOKEN}, {TOKEN}")),
            ],
        ],
    )
    .await;
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive_and_stripped() {
    let (m, px) = passthrough_with_auth("sec-scheme").await;
    send_each(
        &px,
        &m,
        vec![
            vec![("authorization", format!("bearer {TOKEN}"))],
            vec![("authorization", format!("BEARER    {TOKEN}"))],
            vec![("authorization", format!("bEaReR\t{TOKEN_2}"))],
            vec![
                ("authorization", format!("BEARER {TOKEN}")),
                ("x-api-key", TOKEN.to_string()),
                ("api-key", TOKEN_2.to_string()),
            ],
        ],
    )
    .await;
}

#[tokio::test]
async fn passthrough_still_gets_the_clients_own_key_from_another_header() {
    let (m, px) = passthrough_with_auth("sec-own-key").await;
    let r = px
        .send(
            Request::post("/v1/messages", anthropic_body("m", false))
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("x-api-key", CLIENT_PROVIDER_KEY),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = px
        .send(
            Request::post("/v1/messages", anthropic_body("m", false))
                .header("x-api-key", TOKEN)
                .header("authorization", format!("Bearer {CLIENT_PROVIDER_KEY}")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = m.recorded();
    assert_eq!(rec[0].header("x-api-key"), Some(CLIENT_PROVIDER_KEY));
    assert_eq!(rec[0].header("authorization"), None);
    assert_eq!(
        rec[1].header("authorization"),
        Some(format!("Bearer {CLIENT_PROVIDER_KEY}").as_str())
    );
    assert_eq!(rec[1].header("x-api-key"), None);
    assert_no_token_upstream(&m);
}

#[tokio::test]
async fn wrong_scheme_or_token_is_refused_before_any_provider() {
    let (m, px) = passthrough_with_auth("sec-refused").await;
    for (k, v) in [
        ("authorization", format!("Basic {TOKEN}")),
        ("authorization", TOKEN.to_string()),
        ("authorization", format!("Bearer {TOKEN}x")),
        ("x-api-key", format!("x{TOKEN}")),
        ("x-other", TOKEN.to_string()),
    ] {
        let r = px
            .send(Request::post("/v1/messages", anthropic_body("m", false)).header(k, v.clone()))
            .await;
        assert_eq!(r.status, 401, "{k}: {v}");
    }
    assert_eq!(m.requests(), 0);
}

/// A refused token cannot succeed on a retry: the answer says so in the
/// header the official SDKs obey (`x-should-retry: false`), or Claude Code
/// retries it with backoff for minutes before telling its user the key is
/// wrong. An overloaded steadfast still lets the SDKs retry.
#[tokio::test]
async fn a_refused_client_token_tells_the_sdks_not_to_retry() {
    let (m, px) = passthrough_with_auth("sec-no-retry").await;
    let r = px
        .send(
            Request::post("/v1/messages", anthropic_body("m", false)).header("x-api-key", "wrong"),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    // No route: the same.
    let r = px
        .send(Request::post("/v1/nothing", anthropic_body("m", false)).header("x-api-key", TOKEN))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    // A provider's answer is the provider's: nothing added.
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)).header("x-api-key", TOKEN))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-should-retry"), None);
    assert_eq!(m.requests(), 1);
}

// ----------------------------------------------------------------- probes

/// steadfast_requests_total{route,outcome}, polled until it reaches `want`
/// (a request is counted just after its response is written).
async fn poll_metric(px: &Proxy, route: &str, outcome: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = requests_total(px, route, outcome).await;
        if v >= want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn requests_total(px: &Proxy, route: &str, outcome: &str) -> f64 {
    let r = common::http::send(px.admin, Request::get("/metrics")).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "steadfast_requests_total"
                && s.labels.get("route") == Some(route)
                && s.labels.get("outcome") == Some(outcome)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn bare_root_probes_are_answered_locally_as_successes() {
    let m = anthropic("p1").await;
    let px = start(Proxy::builder(
        "sec-probe",
        &one_route("/v1/messages", "anthropic", m.addr()),
    ))
    .await;
    let mut c = Conn::connect(px.proxy).await;
    let head = c
        .round_trip(&Request {
            method: "HEAD",
            path: "/",
            headers: Vec::new(),
            body: Vec::new(),
        })
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("x-steadfast-provider"), Some("none"));
    assert_eq!(head.header("x-steadfast-error-class"), None);
    // Same connection: the HEAD answer left it usable.
    let get = c.round_trip(&Request::get("/")).await;
    assert_eq!(get.status, 200);
    assert!(get.text().contains("steadfast"), "{}", get.text());
    assert_eq!(get.header("x-steadfast-attempts"), Some("0"));
    assert_eq!(m.requests(), 0, "a probe reached a provider");

    assert_eq!(poll_metric(&px, "none", "success", 2.0).await, 2.0);
    assert_eq!(requests_total(&px, "none", "request_error").await, 0.0);

    // Only the bare root is a probe.
    for (method, path) in [("POST", "/"), ("GET", "/v1"), ("GET", "/x/")] {
        let r = px
            .send(Request {
                method,
                path,
                headers: Vec::new(),
                body: Vec::new(),
            })
            .await;
        assert_eq!(r.status, 404, "{method} {path}");
    }
    assert_eq!(poll_metric(&px, "none", "request_error", 3.0).await, 3.0);
    assert_eq!(m.requests(), 0);
}

#[tokio::test]
async fn a_route_for_root_still_wins_over_the_probe_answer() {
    let m = anthropic("p1").await;
    let px = start(Proxy::builder(
        "sec-probe-route",
        &one_route("/", "anthropic", m.addr()),
    ))
    .await;
    let r = px.send(Request::get("/")).await;
    assert_eq!(r.header("x-steadfast-provider"), Some("p1"));
    assert_eq!(m.requests(), 1);
    assert_eq!(m.recorded()[0].path, "/");
}
