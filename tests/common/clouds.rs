//! Fake clouds on 127.0.0.1 for the Bedrock and Vertex tests: AWS Bedrock
//! (which checks SigV4 signatures with its own verifier, written here from
//! AWS's specification and not with the signer under test), Google Vertex
//! AI (which checks the bearer token and the URL), and the credential
//! services behind them: Google's OAuth2 token endpoint (checking the
//! service account's RS256 JWT) and the ECS / EKS Pod Identity container
//! credentials endpoint.
//!
//! Each fake answers one request per connection and then closes it, and
//! records what it was sent. Scripts (`push`) say how the next requests
//! are answered: throttled, refused, an exception in the stream, a stream
//! cut mid-frame.

#![allow(dead_code)]

use ring::{digest, hmac};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use steadfast::cloud::eventstream::encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- HTTP --

/// A request as a fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How a fake answers.
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A chunked body written piece by piece; without `finish` the
    /// connection is closed before the last chunk (a cut stream).
    Chunked {
        status: u16,
        headers: Vec<(String, String)>,
        pieces: Vec<Vec<u8>>,
        finish: bool,
    },
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    fn with_header(mut self, k: &str, v: &str) -> Reply {
        match &mut self {
            Reply::Full { headers, .. } | Reply::Chunked { headers, .. } => {
                headers.push((k.into(), v.into()))
            }
        }
        self
    }
}

type Handler = Arc<dyn Fn(Received) -> Reply + Send + Sync>;

/// Serve `handler` on a fresh loopback port, one request per connection.
pub async fn serve(handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
    let addr = listener.local_addr().expect("fake addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = one_exchange(stream, handler).await;
            });
        }
    });
    addr
}

async fn one_exchange(mut s: TcpStream, handler: Handler) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(len);
    let reply = handler(Received {
        method,
        target,
        headers,
        body,
    });
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            s.write_all(out.as_bytes()).await?;
            s.write_all(&body).await?;
        }
        Reply::Chunked {
            status,
            headers,
            pieces,
            finish,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nconnection: close\r\ntransfer-encoding: chunked\r\n"
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            s.write_all(out.as_bytes()).await?;
            for p in pieces {
                s.write_all(format!("{:x}\r\n", p.len()).as_bytes()).await?;
                s.write_all(&p).await?;
                s.write_all(b"\r\n").await?;
                s.flush().await?;
                // Separate reads at the client, like a model's tokens.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if finish {
                s.write_all(b"0\r\n\r\n").await?;
            }
        }
    }
    s.shutdown().await
}

// --------------------------------------------------------------- SigV4 --

/// An AWS key the fake Bedrock accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsKey {
    pub id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl AwsKey {
    pub fn new(id: &str, secret: &str, token: Option<&str>) -> AwsKey {
        AwsKey {
            id: id.into(),
            secret: secret.into(),
            token: token.map(Into::into),
        }
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, b).as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg)
        .as_ref()
        .to_vec()
}

/// Everything but RFC 3986 unreserved characters and `/`, percent-encoded
/// (the path as received is encoded once more: SigV4's double encoding).
fn uri_encode_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The SigV4 canonical request of `req` over `signed` header names.
pub fn canonical_request(req: &Received, signed: &[&str], payload_hash: &str) -> String {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    let query: Vec<String> = pairs
        .iter()
        .map(|p| {
            if p.contains('=') {
                p.to_string()
            } else {
                format!("{p}=")
            }
        })
        .collect();
    let mut headers = String::new();
    for name in signed {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        uri_encode_path(path),
        query.join("&"),
        headers,
        signed.join(";"),
        payload_hash
    )
}

/// Check `req`'s SigV4 signature as AWS does: a known key, a scope for
/// this region and service, a fresh date (unless `now` is None), the
/// session token of a temporary key present and signed, and the signature
/// over host, date, the other signed headers and the body hash.
pub fn verify_sigv4(
    req: &Received,
    keys: &[AwsKey],
    region: &str,
    service: &str,
    now: Option<SystemTime>,
) -> Result<AwsKey, String> {
    let auth = req
        .header("authorization")
        .ok_or("MissingAuthenticationToken")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("IncompleteSignature: algorithm")?;
    let mut cred = None;
    let mut signed = None;
    let mut sig = None;
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            cred = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            sig = Some(v);
        }
    }
    let (cred, signed, sig) = match (cred, signed, sig) {
        (Some(c), Some(h), Some(s)) => (c, h, s),
        _ => return Err("IncompleteSignature".into()),
    };
    let scope: Vec<&str> = cred.split('/').collect();
    let [id, date, r, s, term] = scope[..] else {
        return Err("IncompleteSignature: credential scope".into());
    };
    let key = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or("UnrecognizedClient: unknown access key")?;
    if r != region || s != service || term != "aws4_request" {
        return Err(format!(
            "InvalidSignature: scope {r}/{s} is not {region}/{service}"
        ));
    }
    let amz_date = req
        .header("x-amz-date")
        .ok_or("IncompleteSignature: no x-amz-date")?;
    if !amz_date.starts_with(date) {
        return Err("InvalidSignature: date does not match the scope".into());
    }
    if let Some(now) = now {
        let t = parse_amz_date(amz_date).ok_or("InvalidSignature: bad x-amz-date")?;
        let skew = now.duration_since(t).unwrap_or_else(|e| e.duration());
        if skew > Duration::from_secs(300) {
            return Err("SignatureExpired".into());
        }
    }
    let signed: Vec<&str> = signed.split(';').collect();
    for must in ["host", "x-amz-date"] {
        if !signed.contains(&must) {
            return Err(format!("InvalidSignature: {must} is not signed"));
        }
    }
    if let Some(token) = &key.token {
        if req.header("x-amz-security-token") != Some(token.as_str()) {
            return Err("ExpiredToken: missing or wrong session token".into());
        }
        if !signed.contains(&"x-amz-security-token") {
            return Err("InvalidSignature: session token is not signed".into());
        }
    }
    let payload = req
        .header("x-amz-content-sha256")
        .map(str::to_string)
        .unwrap_or_else(|| sha256_hex(&req.body));
    let creq = canonical_request(req, &signed, &payload);
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{r}/{s}/aws4_request\n{}",
        sha256_hex(creq.as_bytes())
    );
    let k = hmac256(format!("AWS4{}", key.secret).as_bytes(), date.as_bytes());
    let k = hmac256(&k, r.as_bytes());
    let k = hmac256(&k, s.as_bytes());
    let k = hmac256(&k, b"aws4_request");
    let expected = hex(&hmac256(&k, sts.as_bytes()));
    if expected != sig {
        return Err(format!(
            "InvalidSignature: the request signature does not match\n{creq}"
        ));
    }
    Ok(key.clone())
}

/// `20150830T123600Z` as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 {
        return None;
    }
    let n = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (h, mi, se) = (n(9, 11)?, n(11, 13)?, n(13, 15)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

// ------------------------------------------------------------- Bedrock --

/// How the fake Bedrock answers the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum BedrockMode {
    Ok,
    /// 429 ThrottlingException.
    Throttle,
    /// 403 ExpiredTokenException.
    ExpiredToken,
    /// A stream with `message_start` and then this exception frame.
    Exception(&'static str),
    /// A stream cut in the middle of its third frame.
    CutMidStream,
    /// A stream with its first content (`message_start`,
    /// `content_block_start`, one delta) and then this exception frame.
    ExceptionAfterContent(&'static str),
    /// Any error answer: status, `x-amzn-errortype` name, message.
    Error(u16, &'static str, &'static str),
}

pub const BEDROCK_TEXT: &str = "Hello from bedrock";

struct BedrockState {
    keys: Vec<AwsKey>,
    region: String,
    script: VecDeque<BedrockMode>,
    requests: Vec<Received>,
    rejections: Vec<String>,
}

pub struct FakeBedrock {
    pub addr: SocketAddr,
    state: Arc<Mutex<BedrockState>>,
}

impl FakeBedrock {
    pub async fn start(region: &str, keys: Vec<AwsKey>) -> FakeBedrock {
        let state = Arc::new(Mutex::new(BedrockState {
            keys,
            region: region.into(),
            script: VecDeque::new(),
            requests: Vec::new(),
            rejections: Vec::new(),
        }));
        let s = state.clone();
        let addr = serve(Arc::new(move |req| bedrock_answer(&s, req))).await;
        FakeBedrock { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request is answered so (then `Ok` again).
    pub fn push(&self, mode: BedrockMode) {
        self.state.lock().unwrap().script.push_back(mode);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Why requests were refused (signature, shape, body).
    pub fn rejections(&self) -> Vec<String> {
        self.state.lock().unwrap().rejections.clone()
    }
}

fn bedrock_error(status: u16, ty: &str, message: &str) -> Reply {
    Reply::json(status, serde_json::json!({ "message": message })).with_header(
        "x-amzn-errortype",
        &format!("{ty}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
    )
}

fn bedrock_answer(state: &Mutex<BedrockState>, req: Received) -> Reply {
    let mut st = state.lock().unwrap();
    st.requests.push(req.clone());
    if let Err(reason) = verify_sigv4(
        &req,
        &st.keys,
        &st.region,
        "bedrock",
        Some(SystemTime::now()),
    ) {
        st.rejections.push(reason.clone());
        let ty = reason.split(':').next().unwrap_or("InvalidSignature");
        return bedrock_error(403, &format!("{ty}Exception"), &reason);
    }
    let path = req.path().to_string();
    let Some(rest) = path.strip_prefix("/model/") else {
        st.rejections.push(format!("unknown operation {path}"));
        return bedrock_error(404, "UnknownOperationException", "unknown operation");
    };
    let (model, op) = rest.split_once('/').unwrap_or((rest, ""));
    let stream = match op {
        "invoke" => false,
        "invoke-with-response-stream" => true,
        _ => {
            st.rejections.push(format!("unknown operation {path}"));
            return bedrock_error(404, "UnknownOperationException", "unknown operation");
        }
    };
    let body = req.json();
    let problems = [
        (req.method != "POST", "method must be POST"),
        (
            body["anthropic_version"] != "bedrock-2023-05-31",
            "anthropic_version must be bedrock-2023-05-31",
        ),
        (
            body.get("model").is_some(),
            "model is not permitted in the body",
        ),
        (
            body.get("stream").is_some(),
            "stream is not permitted in the body",
        ),
        (
            model.contains(':') || model.contains('/'),
            "model id must be one encoded path segment",
        ),
        (
            req.header("content-type") != Some("application/json"),
            "content-type must be application/json",
        ),
    ];
    if let Some((_, why)) = problems.iter().find(|(bad, _)| *bad) {
        st.rejections.push(why.to_string());
        return bedrock_error(400, "ValidationException", why);
    }
    let mode = st.script.pop_front().unwrap_or(BedrockMode::Ok);
    drop(st);
    let model = model.replace("%3A", ":");
    match mode {
        BedrockMode::Throttle => bedrock_error(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        BedrockMode::ExpiredToken => bedrock_error(
            403,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
        BedrockMode::Error(status, ty, message) => bedrock_error(status, ty, message),
        _ if !stream => Reply::json(200, anthropic_message(&model, BEDROCK_TEXT)),
        mode => {
            let events = bedrock_stream_events(&model, BEDROCK_TEXT);
            let mut frames: Vec<Vec<u8>> =
                events.iter().map(|e| encode::chunk(e).to_vec()).collect();
            let mut finish = true;
            match mode {
                BedrockMode::Exception(ty) => {
                    frames.truncate(1);
                    frames.push(
                        encode::exception(ty, "Bedrock could not finish this stream").to_vec(),
                    );
                }
                BedrockMode::ExceptionAfterContent(ty) => {
                    frames.truncate(3);
                    frames.push(
                        encode::exception(ty, "Bedrock could not finish this stream").to_vec(),
                    );
                }
                BedrockMode::CutMidStream => {
                    let third = frames[2].clone();
                    frames.truncate(2);
                    frames.push(third[..third.len() / 2].to_vec());
                    finish = false;
                }
                _ => {}
            }
            // Frames split across writes at odd places, as TCP may.
            let wire: Vec<u8> = frames.concat();
            let pieces: Vec<Vec<u8>> = wire.chunks(37).map(<[u8]>::to_vec).collect();
            Reply::Chunked {
                status: 200,
                headers: vec![
                    (
                        "content-type".into(),
                        "application/vnd.amazon.eventstream".into(),
                    ),
                    ("x-amzn-requestid".into(), "fake-req-1".into()),
                ],
                pieces,
                finish,
            }
        }
    }
}

/// A whole Anthropic message, as Bedrock's invoke answers.
pub fn anthropic_message(model: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "msg_fake_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 4}
    })
}

/// The events of a Bedrock stream answering `text`: Anthropic's, with
/// Bedrock's `amazon-bedrock-invocationMetrics` in the last one.
pub fn bedrock_stream_events(model: &str, text: &str) -> Vec<String> {
    let mut events = anthropic_stream_events(model, text);
    if let Some(last) = events.last_mut() {
        *last = serde_json::json!({
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": 5,
                "outputTokenCount": 4,
                "invocationLatency": 812,
                "firstByteLatency": 303
            }
        })
        .to_string();
    }
    events
}

/// The events of an Anthropic stream answering `text`, as JSON strings.
pub fn anthropic_stream_events(model: &str, text: &str) -> Vec<String> {
    let (a, b) = text.split_at(text.len() / 2);
    [
        serde_json::json!({"type":"message_start","message":{"id":"msg_fake_1","type":"message","role":"assistant","model":model,"content":[],"stop_reason":null,"usage":{"input_tokens":5,"output_tokens":1}}}),
        serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":a}}),
        serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":b}}),
        serde_json::json!({"type":"content_block_stop","index":0}),
        serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":4}}),
        serde_json::json!({"type":"message_stop"}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect()
}

// -------------------------------------------------------------- Vertex --

/// How the fake Vertex answers the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum VertexMode {
    Ok,
    /// A Google front-end error: status and canonical name.
    Google(u16, &'static str),
}

pub const VERTEX_TEXT: &str = "Hello from vertex";

struct VertexState {
    project: String,
    region: String,
    script: VecDeque<VertexMode>,
    requests: Vec<Received>,
    rejections: Vec<String>,
}

pub struct FakeVertex {
    pub addr: SocketAddr,
    state: Arc<Mutex<VertexState>>,
}

impl FakeVertex {
    /// A Vertex that accepts the tokens `tokens` has issued.
    pub async fn start(project: &str, region: &str, tokens: &FakeGoogleToken) -> FakeVertex {
        let state = Arc::new(Mutex::new(VertexState {
            project: project.into(),
            region: region.into(),
            script: VecDeque::new(),
            requests: Vec::new(),
            rejections: Vec::new(),
        }));
        let s = state.clone();
        let issued = tokens.issued.clone();
        let addr = serve(Arc::new(move |req| vertex_answer(&s, &issued, req))).await;
        FakeVertex { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, mode: VertexMode) {
        self.state.lock().unwrap().script.push_back(mode);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn rejections(&self) -> Vec<String> {
        self.state.lock().unwrap().rejections.clone()
    }
}

fn google_error(status: u16, name: &str, message: &str) -> Reply {
    Reply::json(
        status,
        serde_json::json!({"error": {"code": status, "message": message, "status": name}}),
    )
}

fn vertex_answer(state: &Mutex<VertexState>, issued: &Mutex<Vec<String>>, req: Received) -> Reply {
    let mut st = state.lock().unwrap();
    st.requests.push(req.clone());
    let token = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    if !token.is_some_and(|t| issued.lock().unwrap().iter().any(|i| i == t)) {
        st.rejections.push("bad or missing bearer token".into());
        return google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let prefix = format!(
        "/v1/projects/{}/locations/{}/publishers/anthropic/models/",
        st.project, st.region
    );
    let path = req.path().to_string();
    let Some((model, method)) = path.strip_prefix(&prefix).and_then(|r| r.split_once(':')) else {
        st.rejections.push(format!("unexpected path {path}"));
        return google_error(404, "NOT_FOUND", "not found");
    };
    let body = req.json();
    let stream = match method {
        "rawPredict" => false,
        "streamRawPredict" => true,
        _ => return google_error(404, "NOT_FOUND", "unknown method"),
    };
    let problems = [
        (
            body["anthropic_version"] != "vertex-2023-10-16",
            "anthropic_version must be vertex-2023-10-16",
        ),
        (
            body.get("model").is_some(),
            "model is not permitted in the body",
        ),
        (
            (body["stream"] == true) != stream,
            "stream does not match the method",
        ),
    ];
    if let Some((_, why)) = problems.iter().find(|(bad, _)| *bad) {
        st.rejections.push(why.to_string());
        return google_error(400, "INVALID_ARGUMENT", why);
    }
    let mode = st.script.pop_front().unwrap_or(VertexMode::Ok);
    drop(st);
    match mode {
        VertexMode::Google(status, name) => {
            google_error(status, name, "Quota exceeded for aiplatform.googleapis.com")
        }
        VertexMode::Ok if !stream => Reply::json(200, anthropic_message(model, VERTEX_TEXT)),
        VertexMode::Ok => {
            let pieces = anthropic_stream_events(model, VERTEX_TEXT)
                .iter()
                .map(|e| {
                    let ty: serde_json::Value = serde_json::from_str(e).unwrap();
                    format!("event: {}\ndata: {e}\n\n", ty["type"].as_str().unwrap()).into_bytes()
                })
                .collect();
            Reply::Chunked {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                pieces,
                finish: true,
            }
        }
    }
}

// ----------------------------------------------------- Google tokens --

/// The RSA key of the fake service account (test use only).
pub const FAKE_GCP_KEY_PEM: &str = include_str!("fake_gcp_key.pem");
pub const FAKE_GCP_EMAIL: &str = "steadfast-test@fake-project.iam.gserviceaccount.com";

/// Google's OAuth2 token endpoint for service accounts: checks the JWT
/// bearer grant (RS256 signature with the fake key, issuer, audience,
/// scope) and issues `ya29.fake-N` tokens.
pub struct FakeGoogleToken {
    pub addr: SocketAddr,
    pub issued: Arc<Mutex<Vec<String>>>,
    expires_in: Arc<Mutex<u64>>,
    failing: Arc<Mutex<bool>>,
    rejections: Arc<Mutex<Vec<String>>>,
}

impl FakeGoogleToken {
    pub async fn start() -> FakeGoogleToken {
        let issued = Arc::new(Mutex::new(Vec::new()));
        let expires_in = Arc::new(Mutex::new(3600u64));
        let failing = Arc::new(Mutex::new(false));
        let rejections = Arc::new(Mutex::new(Vec::new()));
        let public = {
            use ring::signature::KeyPair;
            let der = pem_body(FAKE_GCP_KEY_PEM);
            ring::signature::RsaKeyPair::from_pkcs8(&der)
                .expect("fake key")
                .public_key()
                .as_ref()
                .to_vec()
        };
        let (i, e, f, r) = (
            issued.clone(),
            expires_in.clone(),
            failing.clone(),
            rejections.clone(),
        );
        let addr_cell = Arc::new(Mutex::new(String::new()));
        let a = addr_cell.clone();
        let addr = serve(Arc::new(move |req: Received| {
            let aud = a.lock().unwrap().clone();
            match check_jwt_grant(&req, &public, &aud) {
                Err(why) => {
                    r.lock().unwrap().push(why.clone());
                    Reply::json(400, serde_json::json!({"error": "invalid_grant", "error_description": why}))
                }
                Ok(()) if *f.lock().unwrap() => {
                    Reply::json(503, serde_json::json!({"error": "internal_failure"}))
                }
                Ok(()) => {
                    let mut issued = i.lock().unwrap();
                    let token = format!("ya29.fake-{}", issued.len() + 1);
                    issued.push(token.clone());
                    Reply::json(
                        200,
                        serde_json::json!({"access_token": token, "expires_in": *e.lock().unwrap(), "token_type": "Bearer"}),
                    )
                }
            }
        }))
        .await;
        *addr_cell.lock().unwrap() = format!("http://{addr}/token");
        FakeGoogleToken {
            addr,
            issued,
            expires_in,
            failing,
            rejections,
        }
    }

    pub fn token_uri(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Lifetime of the tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        *self.expires_in.lock().unwrap() = secs;
    }

    pub fn set_failing(&self, failing: bool) {
        *self.failing.lock().unwrap() = failing;
    }

    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    pub fn rejections(&self) -> Vec<String> {
        self.rejections.lock().unwrap().clone()
    }

    /// A service-account key file whose `token_uri` is this server.
    pub fn write_service_account(&self, dir: &Path) -> PathBuf {
        let path = dir.join("service-account.json");
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": "0123456789abcdef",
            "private_key": FAKE_GCP_KEY_PEM,
            "client_email": FAKE_GCP_EMAIL,
            "client_id": "1234567890",
            "auth_uri": "http://127.0.0.1:9/auth",
            "token_uri": self.token_uri(),
        });
        std::fs::write(&path, json.to_string()).expect("write service account");
        path
    }
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    aws_smithy_types::base64::decode(b64).expect("pem base64")
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    let mut t: String = s
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !t.len().is_multiple_of(4) {
        t.push('=');
    }
    aws_smithy_types::base64::decode(t).ok()
}

/// `application/x-www-form-urlencoded` value decoding.
fn form_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hexv = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hexv.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_jwt_grant(req: &Received, public_der: &[u8], audience: &str) -> Result<(), String> {
    if req.method != "POST" || req.path() != "/token" {
        return Err(format!("unexpected {} {}", req.method, req.target));
    }
    let form = String::from_utf8_lossy(&req.body).into_owned();
    let field = |k: &str| {
        form.split('&')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .map(form_decode)
    };
    if field("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return Err("grant_type must be jwt-bearer".into());
    }
    let jwt = field("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err("assertion is not a JWT".into());
    };
    let header: serde_json::Value =
        serde_json::from_slice(&b64url(h).ok_or("bad header")?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err("alg must be RS256".into());
    }
    let sig = b64url(s).ok_or("bad signature encoding")?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_der,
    )
    .verify(format!("{h}.{c}").as_bytes(), &sig)
    .map_err(|_| "JWT signature does not verify".to_string())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64url(c).ok_or("bad claims")?).map_err(|e| e.to_string())?;
    if claims["iss"] != FAKE_GCP_EMAIL {
        return Err("wrong issuer".into());
    }
    if claims["aud"] != audience {
        return Err(format!("audience {} is not {audience}", claims["aud"]));
    }
    if !claims["scope"].as_str().is_some_and(|s| {
        s.split(' ')
            .any(|x| x == "https://www.googleapis.com/auth/cloud-platform")
    }) {
        return Err("scope lacks cloud-platform".into());
    }
    Ok(())
}

// ------------------------------------------ ECS / EKS Pod Identity --

/// The container credentials endpoint (ECS task roles, EKS Pod
/// Identity): answers `GET` with the `authorization` token it was given
/// with temporary credentials lasting `lifetime`, a new key each time.
pub struct FakeContainerCredentials {
    pub addr: SocketAddr,
    served: Arc<Mutex<Vec<AwsKey>>>,
}

impl FakeContainerCredentials {
    pub async fn start(auth_token: &str, lifetime: Duration) -> FakeContainerCredentials {
        let served = Arc::new(Mutex::new(Vec::new()));
        let s = served.clone();
        let auth = auth_token.to_string();
        let addr = serve(Arc::new(move |req: Received| {
            if req.header("authorization") != Some(auth.as_str()) {
                return Reply::json(401, serde_json::json!({"message": "bad token"}));
            }
            let mut served = s.lock().unwrap();
            let n = served.len() + 1;
            let key = AwsKey::new(
                &format!("ASIAFAKE{n:08}"),
                &format!("fake-secret-{n}"),
                Some(&format!("fake-session-token-{n}")),
            );
            served.push(key.clone());
            let expires = httpdate_rfc3339(SystemTime::now() + lifetime);
            Reply::json(
                200,
                serde_json::json!({
                    "AccessKeyId": key.id,
                    "SecretAccessKey": key.secret,
                    "Token": key.token,
                    "Expiration": expires,
                }),
            )
        }))
        .await;
        FakeContainerCredentials { addr, served }
    }

    pub fn uri(&self) -> String {
        format!("http://{}/v1/credentials", self.addr)
    }

    pub fn served(&self) -> Vec<AwsKey> {
        self.served.lock().unwrap().clone()
    }
}

/// RFC 3339 in UTC (`2026-01-02T03:04:05Z`).
pub fn httpdate_rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
