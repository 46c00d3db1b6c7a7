//! AWS credentials for Bedrock, from AWS's standard chain (`aws-config`),
//! in the order AWS's SDKs use: environment variables, the shared profile
//! files (static keys, `credential_process`, role assumption, web identity),
//! a web identity token (EKS IRSA: `AWS_ROLE_ARN` and
//! `AWS_WEB_IDENTITY_TOKEN_FILE`), the container endpoint (ECS task roles,
//! and EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_FULL_URI` with
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`), and EC2 instance metadata
//! (IMDSv2; off with `AWS_EC2_METADATA_DISABLED=true`).
//!
//! One [`AwsCredentials`] serves every Bedrock provider of the process:
//! credentials do not depend on the region (it only picks the STS endpoint
//! for web identity). Its refresh loop runs as a background service.

use super::refresh::{Fetched, Refreshed, Source};
use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_config::Region;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls;
use std::sync::Arc;
use tokio::sync::watch;

/// The process's AWS credentials, refreshed in the background.
pub type AwsCredentials = Refreshed<Credentials>;

/// The standard chain, built once and asked again on every refresh (none
/// of its providers caches: each ask reads the environment, the files or
/// the endpoint anew).
pub struct AwsChain {
    chain: DefaultCredentialsChain,
}

impl AwsChain {
    /// The default chain; `region` is used for STS (web identity, roles)
    /// when the environment names none.
    pub async fn new(region: &str) -> AwsChain {
        // rustls with ring, as the rest of steadfast: no second TLS stack.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let conf = ProviderConfig::default().with_http_client(http);
        let chain = DefaultCredentialsChain::builder()
            .region(Region::new(region.to_string()))
            .configure(conf)
            .build()
            .await;
        AwsChain { chain }
    }
}

#[async_trait]
impl Source for AwsChain {
    type Value = Credentials;

    async fn fetch(&self) -> Result<Fetched<Credentials>, String> {
        match self.chain.provide_credentials().await {
            Ok(c) => Ok(Fetched {
                expires_at: c.expiry(),
                value: c,
            }),
            Err(e) => Err(describe(&e)),
        }
    }
}

/// An error and its causes on one line. AWS's credential errors name the
/// provider and what was missing or refused, never a key.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = format!("no AWS credentials: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Start refreshing `cell` from the default chain until `shutdown`.
/// Meant to be wrapped in a background service at process start.
pub async fn run(cell: Arc<AwsCredentials>, region: String, shutdown: watch::Receiver<bool>) {
    let chain = AwsChain::new(&region).await;
    cell.run(chain, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_described_with_their_causes() {
        #[derive(Debug)]
        struct Inner;
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connection refused")
            }
        }
        impl std::error::Error for Inner {}
        let e = aws_credential_types::provider::error::CredentialsError::provider_error(Inner);
        let d = describe(&e);
        assert!(d.starts_with("no AWS credentials: "), "{d}");
        assert!(d.contains("connection refused"), "{d}");
    }
}
