//! Bedrock and Vertex end to end at the library level: requests built by
//! `steadfast::cloud`, signed or given a token, sent with a plain HTTP
//! client to the fake clouds of `common::clouds` (which check signatures
//! and tokens on their own), and the answers decoded and classified as the
//! request path will.

mod common;

use common::clouds::*;
use common::http::{self, Request, Response};
use common::test_dir;
use http_crate::Method;
use std::time::SystemTime;
use steadfast::cloud::eventstream::{DecodeError, EventStreamDecoder};
use steadfast::cloud::gcp_token::{GcpSource, GcpToken};
use steadfast::cloud::request::ResponseFormat;
use steadfast::cloud::sigv4::{self, Signable};
use steadfast::cloud::{bedrock, vertex, CredentialStatus};
use steadfast::config::{schema::FileConfig, ConfigSource, ProviderSettings};
use steadfast::outcome::ErrorClass;
use steadfast::sse::kind::{classify, EventKind};
use steadfast::sse::SseFramer;

extern crate http as http_crate;

const REGION: &str = "us-east-1";
const MODEL: &str = "claude-sonnet-4-5";
const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

fn provider(yaml: &str) -> ProviderSettings {
    let full = format!(
        "providers:\n{yaml}\nroutes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p] }}\n"
    );
    let f: FileConfig = serde_yaml::from_str(&full).expect("yaml");
    let c = steadfast::config::validate(&f, ConfigSource::Builtin, &|_| None).expect("valid");
    c.providers[0].clone()
}

fn bedrock_provider(fake: &FakeBedrock) -> ProviderSettings {
    provider(&format!(
        "  - name: p\n    api: anthropic\n    kind: bedrock\n    region: {REGION}\n    base_url: \"{}\"\n    models: {{ \"{MODEL}\": \"{BEDROCK_MODEL}\" }}\n    anthropic_beta: {{ deny: [\"context-1m-2025-08-07\"] }}",
        fake.base_url()
    ))
}

fn aws_creds(key: &AwsKey) -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new(
        key.id.clone(),
        key.secret.clone(),
        key.token.clone(),
        None,
        "test",
    )
}

fn client_body(stream: bool) -> Vec<u8> {
    serde_json::json!({
        "model": MODEL,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello"}],
    })
    .to_string()
    .into_bytes()
}

/// Build, sign and send one Bedrock request the way an attempt will;
/// `tamper` changes the body after signing.
async fn send_bedrock(
    fake: &FakeBedrock,
    p: &ProviderSettings,
    key: &AwsKey,
    stream: bool,
    tamper: bool,
) -> (Response, ResponseFormat) {
    let mut client_headers = http_crate::HeaderMap::new();
    client_headers.insert(
        "anthropic-beta",
        "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
            .parse()
            .unwrap(),
    );
    let up = steadfast::cloud::prepare(
        p,
        &Method::POST,
        "/v1/messages",
        &client_headers,
        &client_body(stream),
    )
    .expect("prepare");
    let path = format!("{}{}", p.upstream.path_prefix, up.path);
    let host = p.upstream.host_header();
    let signed = sigv4::sign(
        &Signable {
            method: "POST",
            host: &host,
            path: &path,
            headers: &up.headers,
            body: &up.body,
        },
        &aws_creds(key),
        REGION,
        bedrock::SIGNING_SERVICE,
        SystemTime::now(),
    )
    .expect("sign");
    let mut body = up.body.to_vec();
    if tamper {
        body.extend_from_slice(b" ");
    }
    let mut req = Request {
        method: "POST",
        path: &path,
        headers: Vec::new(),
        body,
    };
    for (n, v) in up.headers.iter().chain(signed.iter()) {
        req.headers
            .push((n.as_str(), v.to_str().unwrap().to_string()));
    }
    (http::send(fake.addr, req).await, up.response)
}

/// What the request path will do with a streaming body: decode, frame,
/// classify. Returns the SSE, the kinds of its events, and the decoder's
/// verdict at the end.
fn through_pipeline(r: &Response) -> (String, Vec<EventKind>, Result<(), DecodeError>) {
    let mut decoder = EventStreamDecoder::new();
    let mut framer = SseFramer::new();
    let mut sse = Vec::new();
    let mut end = Ok(());
    for (_, piece) in &r.pieces {
        match decoder.push(piece) {
            Ok(b) => {
                if let Some(ev) = framer.push(b) {
                    sse.extend_from_slice(&ev);
                }
            }
            Err(e) => {
                end = Err(e);
                break;
            }
        }
    }
    if end.is_ok() {
        end = decoder.finish();
    }
    let kinds = steadfast::sse::events(&sse)
        .map(|(name, data)| classify(steadfast::config::Api::Anthropic, name, &data))
        .collect();
    (String::from_utf8(sse).unwrap(), kinds, end)
}

#[test]
fn the_fake_verifier_agrees_with_aws_published_vectors() {
    // aws-signing-test-suite v4/post-sts-header-before.
    let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
    let key = AwsKey::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        Some(token),
    );
    let req = Received {
        method: "POST".into(),
        target: "/".into(),
        headers: vec![
            ("host".into(), "example.amazonaws.com".into()),
            ("x-amz-security-token".into(), token.into()),
            ("x-amz-date".into(), "20150830T123600Z".into()),
            ("authorization".into(), "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead".into()),
        ],
        body: Vec::new(),
    };
    assert_eq!(
        verify_sigv4(
            &req,
            std::slice::from_ref(&key),
            "us-east-1",
            "service",
            None
        ),
        Ok(key.clone())
    );
    // The verifier is not a yes-man: a changed body, region, token or key.
    let mut changed = req.clone();
    changed.body = b"x".to_vec();
    assert!(verify_sigv4(
        &changed,
        std::slice::from_ref(&key),
        "us-east-1",
        "service",
        None
    )
    .is_err());
    assert!(verify_sigv4(
        &req,
        std::slice::from_ref(&key),
        "us-west-2",
        "service",
        None
    )
    .is_err());
    let other_token = AwsKey::new("AKIDEXAMPLE", &key.secret, Some("other"));
    assert!(verify_sigv4(&req, &[other_token], "us-east-1", "service", None).is_err());
    let other_secret = AwsKey::new("AKIDEXAMPLE", "nope", Some(token));
    assert!(verify_sigv4(&req, &[other_secret], "us-east-1", "service", None).is_err());
    // A 2015 signature is stale today.
    let stale = verify_sigv4(
        &req,
        &[key],
        "us-east-1",
        "service",
        Some(SystemTime::now()),
    );
    assert_eq!(stale, Err("SignatureExpired".to_string()));

    // v4/double-url-encode: an encoded path is encoded again.
    let lambda = Received {
        method: "POST".into(),
        target: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A892717189312%3Afunction%3Amy-rusty-fun/invocations".into(),
        headers: vec![
            ("host".into(), "lambda.us-east-2.amazonaws.com".into()),
            ("x-amz-date".into(), "20210511T154045Z".into()),
        ],
        body: Vec::new(),
    };
    assert_eq!(
        canonical_request(&lambda, &["host", "x-amz-date"], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        "POST\n/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A892717189312%253Afunction%253Amy-rusty-fun/invocations\n\nhost:lambda.us-east-2.amazonaws.com\nx-amz-date:20210511T154045Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[tokio::test]
async fn a_signed_invoke_is_accepted_and_answered() {
    let key = AwsKey::new(
        "ASIATESTKEY0001",
        "test-secret-1",
        Some("test-session-token-1"),
    );
    let fake = FakeBedrock::start(REGION, vec![key.clone()]).await;
    let p = bedrock_provider(&fake);
    let (r, format) = send_bedrock(&fake, &p, &key, false, false).await;
    assert_eq!(r.status, 200, "{} / {:?}", r.text(), fake.rejections());
    assert_eq!(format, ResponseFormat::Json);
    assert_eq!(r.json()["content"][0]["text"], BEDROCK_TEXT);
    assert_eq!(
        r.json()["model"],
        BEDROCK_MODEL,
        "the mapped model id went in the path"
    );
    let seen = &fake.requests()[0];
    assert_eq!(
        seen.path(),
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    );
    let body = seen.json();
    assert_eq!(
        body["anthropic_beta"],
        serde_json::json!(["interleaved-thinking-2025-05-14"])
    );
    assert_eq!(body["messages"][0]["content"], "hello");
    assert_eq!(
        seen.header("x-amz-security-token"),
        Some("test-session-token-1")
    );
}

#[tokio::test]
async fn a_request_changed_after_signing_is_refused_as_auth() {
    let key = AwsKey::new("AKIATESTKEY0002", "test-secret-2", None);
    let fake = FakeBedrock::start(REGION, vec![key.clone()]).await;
    let p = bedrock_provider(&fake);
    let (r, _) = send_bedrock(&fake, &p, &key, false, true).await;
    assert_eq!(r.status, 403);
    assert!(
        fake.rejections()[0].starts_with("InvalidSignature"),
        "{:?}",
        fake.rejections()
    );
    let e = bedrock::http_error(r.status, r.header("x-amzn-errortype"), &r.body);
    assert_eq!(e.class, ErrorClass::Auth);
    // And a key Bedrock does not know.
    let stranger = AwsKey::new("AKIASTRANGER0003", "test-secret-2", None);
    let (r, _) = send_bedrock(&fake, &p, &stranger, false, false).await;
    assert_eq!(r.status, 403);
    assert!(fake.rejections()[1].starts_with("UnrecognizedClient"));
    let e = bedrock::http_error(r.status, r.header("x-amzn-errortype"), &r.body);
    assert_eq!(
        (e.class, e.anthropic_type),
        (ErrorClass::Auth, "authentication_error")
    );
}

#[tokio::test]
async fn a_stream_decodes_into_the_sse_of_anthropic() {
    let key = AwsKey::new("ASIATESTKEY0004", "test-secret-4", Some("tok-4"));
    let fake = FakeBedrock::start(REGION, vec![key.clone()]).await;
    let p = bedrock_provider(&fake);
    let (r, format) = send_bedrock(&fake, &p, &key, true, false).await;
    assert_eq!(r.status, 200, "{:?}", fake.rejections());
    assert_eq!(format, ResponseFormat::EventStream);
    assert_eq!(r.header("content-type"), Some(bedrock::EVENTSTREAM));
    assert!(r.complete);
    assert!(r.pieces.len() > 7, "frames arrived split over many reads");
    assert!(fake.requests()[0]
        .path()
        .ends_with("/invoke-with-response-stream"));
    let (sse, kinds, end) = through_pipeline(&r);
    assert_eq!(end, Ok(()));
    let expected: String = bedrock_stream_events(BEDROCK_MODEL, BEDROCK_TEXT)
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            format!("event: {}\ndata: {e}\n\n", v["type"].as_str().unwrap())
        })
        .collect();
    assert_eq!(sse, expected);
    assert_eq!(kinds.first(), Some(&EventKind::Setup));
    assert_eq!(kinds.last(), Some(&EventKind::Terminal));
    assert!(kinds.contains(&EventKind::Content));
}

#[tokio::test]
async fn exceptions_in_a_stream_end_it_with_a_classified_error_event() {
    let key = AwsKey::new("ASIATESTKEY0005", "test-secret-5", Some("tok-5"));
    let fake = FakeBedrock::start(REGION, vec![key.clone()]).await;
    let p = bedrock_provider(&fake);
    for (exception, class) in [
        ("throttlingException", ErrorClass::RateLimit),
        ("modelStreamErrorException", ErrorClass::Server),
        ("serviceUnavailableException", ErrorClass::Server),
        ("validationException", ErrorClass::Request),
    ] {
        fake.push(BedrockMode::Exception(exception));
        let (r, _) = send_bedrock(&fake, &p, &key, true, false).await;
        assert_eq!(r.status, 200);
        let (sse, kinds, end) = through_pipeline(&r);
        assert_eq!(end, Ok(()), "{exception}");
        assert_eq!(
            kinds,
            [EventKind::Setup, EventKind::Error],
            "{exception}: {sse}"
        );
        let (_, data) = steadfast::sse::events(sse.as_bytes()).last().unwrap();
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        let ty = v["error"]["type"].as_str().unwrap();
        assert_eq!(
            steadfast::cloud::class_of_error_type(ty),
            class,
            "{exception}"
        );
        assert!(v["error"]["message"].as_str().unwrap().contains(exception));
    }
}

#[tokio::test]
async fn a_stream_cut_mid_frame_is_a_network_failure_not_a_clean_end() {
    let key = AwsKey::new("ASIATESTKEY0006", "test-secret-6", Some("tok-6"));
    let fake = FakeBedrock::start(REGION, vec![key.clone()]).await;
    let p = bedrock_provider(&fake);
    fake.push(BedrockMode::CutMidStream);
    let (r, _) = send_bedrock(&fake, &p, &key, true, false).await;
    assert!(!r.complete);
    let (sse, kinds, end) = through_pipeline(&r);
    assert_eq!(kinds, [EventKind::Setup, EventKind::Content], "{sse}");
    let e = end.unwrap_err();
    assert!(matches!(e, DecodeError::Truncated(_)), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Network);
}

#[tokio::test]
async fn throttled_and_expired_answers_map_to_their_classes() {
    let key = AwsKey::new("ASIATESTKEY0007", "test-secret-7", Some("tok-7"));
    let fake = FakeBedrock::start(REGION, vec![key.clone()]).await;
    let p = bedrock_provider(&fake);
    fake.push(BedrockMode::Throttle);
    fake.push(BedrockMode::ExpiredToken);
    let (r, _) = send_bedrock(&fake, &p, &key, false, false).await;
    assert_eq!(r.status, 429);
    let e = bedrock::http_error(r.status, r.header("x-amzn-errortype"), &r.body);
    assert_eq!(e.class, ErrorClass::RateLimit);
    let client: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
    assert_eq!(client["error"]["type"], "rate_limit_error");
    let (r, _) = send_bedrock(&fake, &p, &key, true, false).await;
    assert_eq!(r.status, 403);
    let e = bedrock::http_error(r.status, r.header("x-amzn-errortype"), &r.body);
    assert_eq!((e.class, e.status), (ErrorClass::Auth, 401));
    assert!(e.message.contains("expired"), "{}", e.message);
}

async fn vertex_setup() -> (FakeGoogleToken, FakeVertex, GcpToken, ProviderSettings) {
    let tokens = FakeGoogleToken::start().await;
    let fake = FakeVertex::start("fake-project", "europe-west1", &tokens).await;
    let p = provider(&format!(
        "  - name: p\n    api: anthropic\n    kind: vertex\n    region: europe-west1\n    project: fake-project\n    base_url: \"{}\"\n    models: {{ \"{MODEL}\": \"claude-sonnet-4-5@20250929\" }}",
        fake.base_url()
    ));
    (tokens, fake, GcpToken::new(), p)
}

async fn send_vertex(
    fake: &FakeVertex,
    p: &ProviderSettings,
    token: &http_crate::HeaderValue,
    stream: bool,
) -> (Response, ResponseFormat) {
    let up = steadfast::cloud::prepare(
        p,
        &Method::POST,
        "/v1/messages",
        &http_crate::HeaderMap::new(),
        &client_body(stream),
    )
    .expect("prepare");
    let path = format!("{}{}", p.upstream.path_prefix, up.path);
    let mut req = Request {
        method: "POST",
        path: &path,
        headers: Vec::new(),
        body: up.body.to_vec(),
    };
    for (n, v) in &up.headers {
        req.headers
            .push((n.as_str(), v.to_str().unwrap().to_string()));
    }
    req.headers
        .push(("authorization", token.to_str().unwrap().to_string()));
    (http::send(fake.addr, req).await, up.response)
}

/// Run the token refresh loop until its first verdict.
async fn first_token(
    cell: &std::sync::Arc<GcpToken>,
    source: GcpSource,
) -> (tokio::sync::watch::Sender<bool>, CredentialStatus) {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let c = cell.clone();
    tokio::spawn(async move { c.run(source, shutdown).await });
    let mut w = cell.watch();
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        w.wait_for(|s| *s != CredentialStatus::Pending),
    )
    .await
    .expect("token within 20 s")
    .expect("watch")
    .clone();
    (stop, status)
}

#[tokio::test]
async fn vertex_gets_a_token_from_the_service_account_and_streams_sse_through() {
    let (tokens, fake, cell, p) = vertex_setup().await;
    let dir = test_dir("vertex-sa");
    let sa = tokens.write_service_account(&dir);
    let cell = std::sync::Arc::new(cell);
    let (_stop, status) = first_token(&cell, GcpSource::ServiceAccountFile(sa)).await;
    assert_eq!(status, CredentialStatus::Ready, "{:?}", tokens.rejections());
    assert_eq!(
        tokens.issued(),
        ["ya29.fake-1"],
        "the key's token_uri was used"
    );
    let token = cell.current().expect("token");
    let (r, format) = send_vertex(&fake, &p, token.header(), true).await;
    assert_eq!(r.status, 200, "{} {:?}", r.text(), fake.rejections());
    assert_eq!(format, ResponseFormat::Sse);
    assert!(fake.requests()[0]
        .path()
        .ends_with("/models/claude-sonnet-4-5@20250929:streamRawPredict"));
    let events = r.events();
    assert_eq!(events.first().unwrap().0.as_deref(), Some("message_start"));
    assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));
    let (r, format) = send_vertex(&fake, &p, token.header(), false).await;
    assert_eq!((r.status, format), (200, ResponseFormat::Json));
    assert_eq!(r.json()["content"][0]["text"], VERTEX_TEXT);
}

#[tokio::test]
async fn vertex_errors_are_classified_and_rendered_in_anthropic_shape() {
    let (tokens, fake, cell, p) = vertex_setup().await;
    let dir = test_dir("vertex-err");
    let cell = std::sync::Arc::new(cell);
    let (_stop, _) = first_token(
        &cell,
        GcpSource::ServiceAccountFile(tokens.write_service_account(&dir)),
    )
    .await;
    let forged = vertex::authorization("ya29.forged").unwrap();
    let (r, _) = send_vertex(&fake, &p, &forged, false).await;
    assert_eq!(r.status, 401);
    let (class, body) = vertex::http_error(r.status, &bytes::Bytes::from(r.body.clone()));
    assert_eq!(class, ErrorClass::Auth);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("authentication_error"))
    );
    fake.push(VertexMode::Google(429, "RESOURCE_EXHAUSTED"));
    let token = cell.current().expect("token");
    let (r, _) = send_vertex(&fake, &p, token.header(), false).await;
    let (class, body) = vertex::http_error(r.status, &bytes::Bytes::from(r.body.clone()));
    assert_eq!(class, ErrorClass::RateLimit);
    assert!(String::from_utf8_lossy(&body).contains("rate_limit_error"));
}

#[tokio::test]
async fn a_token_service_that_refuses_leaves_the_provider_unavailable_with_a_reason() {
    let (tokens, _fake, cell, _p) = vertex_setup().await;
    tokens.set_failing(true);
    let dir = test_dir("vertex-down");
    let cell = std::sync::Arc::new(cell);
    let (_stop, status) = first_token(
        &cell,
        GcpSource::ServiceAccountFile(tokens.write_service_account(&dir)),
    )
    .await;
    let CredentialStatus::Unavailable(reason) = status else {
        panic!("expected unavailable, got {status:?}");
    };
    assert!(reason.contains("token"), "{reason}");
    assert!(
        !reason.contains("PRIVATE KEY") && !reason.contains("ya29"),
        "{reason}"
    );
    assert!(cell.current().is_none());
}
