//! AWS credentials from the standard chain, as the process environment
//! sets it up: keys in the environment, the container endpoint of ECS and
//! EKS Pod Identity (a fake on 127.0.0.1), and nothing at all. The chain
//! reads the process environment, so these tests take turns; instance
//! metadata is switched off, so nothing here waits on 169.254.169.254.

mod common;

use common::clouds::*;
use common::http::{self, Request};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use steadfast::cloud::aws_credentials::{self, AwsCredentials};
use steadfast::cloud::sigv4::{self, Signable};
use steadfast::cloud::CredentialStatus;
use tokio::sync::{watch, Mutex};

static ENV: Mutex<()> = Mutex::const_new(());

const AWS_VARS: [&str; 12] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
];

/// A clean AWS environment: no keys, no profile files, no instance
/// metadata; then `set`.
fn aws_env(set: &[(&str, String)]) {
    for v in AWS_VARS {
        std::env::remove_var(v);
    }
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/steadfast-test/config");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/steadfast-test/credentials",
    );
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in set {
        std::env::set_var(k, v);
    }
}

/// Start the refresh loop; returns once it has a verdict.
async fn start(cell: &Arc<AwsCredentials>) -> (watch::Sender<bool>, CredentialStatus) {
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(aws_credentials::run(
        cell.clone(),
        "us-east-1".into(),
        shutdown,
    ));
    let mut w = cell.watch();
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        w.wait_for(|s| *s != CredentialStatus::Pending),
    )
    .await
    .expect("a verdict within 20 s")
    .expect("watch")
    .clone();
    (stop, status)
}

#[tokio::test]
async fn keys_in_the_environment_are_used() {
    let _env = ENV.lock().await;
    aws_env(&[
        ("AWS_ACCESS_KEY_ID", "AKIAENVTEST0001".into()),
        ("AWS_SECRET_ACCESS_KEY", "env-secret".into()),
        ("AWS_SESSION_TOKEN", "env-session".into()),
    ]);
    let cell = Arc::new(AwsCredentials::new());
    let (stop, status) = start(&cell).await;
    assert_eq!(status, CredentialStatus::Ready);
    let c = cell.current().expect("credentials");
    assert_eq!(c.access_key_id(), "AKIAENVTEST0001");
    assert_eq!(c.session_token(), Some("env-session"));
    // Debug output of the credentials never shows the secret.
    assert!(!format!("{c:?}").contains("env-secret"));
    stop.send(true).unwrap();
}

#[tokio::test]
async fn no_credentials_anywhere_is_reported_without_secrets_and_without_hanging() {
    let _env = ENV.lock().await;
    aws_env(&[]);
    let cell = Arc::new(AwsCredentials::new());
    let started = std::time::Instant::now();
    let (stop, status) = start(&cell).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let CredentialStatus::Unavailable(reason) = status else {
        panic!("expected unavailable, got {status:?}");
    };
    assert!(reason.starts_with("no AWS credentials"), "{reason}");
    assert!(cell.current().is_none());
    stop.send(true).unwrap();
}

#[tokio::test]
async fn pod_identity_credentials_are_fetched_refreshed_and_sign_requests() {
    let _env = ENV.lock().await;
    let endpoint =
        FakeContainerCredentials::start("pod-identity-token", Duration::from_secs(8)).await;
    let dir = common::test_dir("pod-identity");
    let token_file = dir.join("eks-pod-identity-token");
    std::fs::write(&token_file, "pod-identity-token").unwrap();
    aws_env(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.uri()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ]);
    let cell = Arc::new(AwsCredentials::new());
    let (stop, status) = start(&cell).await;
    assert_eq!(status, CredentialStatus::Ready);
    let first = cell.current().expect("credentials");
    assert_eq!(first.access_key_id(), "ASIAFAKE00000001");
    assert_eq!(first.session_token(), Some("fake-session-token-1"));

    // They sign a request the fake Bedrock accepts.
    let fake = FakeBedrock::start("us-east-1", endpoint.served()).await;
    let host = fake.addr.to_string();
    let path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke";
    let body = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[]}"#;
    let ct = [(
        http_crate::header::CONTENT_TYPE,
        http_crate::HeaderValue::from_static("application/json"),
    )];
    let signed = sigv4::sign(
        &Signable {
            method: "POST",
            host: &host,
            path,
            headers: &ct,
            body,
        },
        &first,
        "us-east-1",
        "bedrock",
        SystemTime::now(),
    )
    .unwrap();
    let mut req = Request {
        method: "POST",
        path,
        headers: vec![("content-type", "application/json".into())],
        body: body.to_vec(),
    };
    for (n, v) in &signed {
        req.headers
            .push((n.as_str(), v.to_str().unwrap().to_string()));
    }
    let r = http::send(fake.addr, req).await;
    assert_eq!(r.status, 200, "{} {:?}", r.text(), fake.rejections());

    // Eight-second credentials are replaced before they expire.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = cell.current().expect("never without credentials meanwhile");
        if now.access_key_id() != first.access_key_id() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not refreshed in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(endpoint.served().len() >= 2);
    stop.send(true).unwrap();
}

extern crate http as http_crate;
