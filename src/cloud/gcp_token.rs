//! OAuth2 access tokens for Vertex AI from Google's Application Default
//! Credentials, by the `gcp_auth` crate, in its order: the service-account
//! key file named by `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user
//! credentials (`gcloud auth application-default login`), the metadata
//! server (GCE, Cloud Run, and GKE workload identity), and `gcloud auth
//! print-access-token`.
//!
//! `gcp_auth` caches a token until 20 s before it expires. To refresh well
//! ahead of that (see [`super::refresh`]), every fetch discovers the
//! credentials anew, which costs a file read or a metadata lookup once an
//! hour, and then asks for a fresh token.
//!
//! One [`GcpToken`] serves every Vertex provider of the process.

use super::refresh::{Fetched, Refreshed, Source};
use super::vertex;
use async_trait::async_trait;
use gcp_auth::{CustomServiceAccount, TokenProvider};
use http::HeaderValue;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// A Vertex access token as the `authorization` header it is sent in,
/// marked sensitive: it never shows in debug output.
#[derive(Clone)]
pub struct AccessToken {
    header: HeaderValue,
}

impl AccessToken {
    pub fn new(token: &str) -> Option<AccessToken> {
        vertex::authorization(token).map(|header| AccessToken { header })
    }

    /// `Bearer <token>`, for the upstream request.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// The process's Vertex token, refreshed in the background.
pub type GcpToken = Refreshed<AccessToken>;

/// Where tokens come from.
#[derive(Debug, Clone)]
pub enum GcpSource {
    /// Application Default Credentials, discovered on every fetch.
    Adc,
    /// One service-account key file, whatever the environment says.
    ServiceAccountFile(PathBuf),
}

#[async_trait]
impl Source for GcpSource {
    type Value = AccessToken;

    async fn fetch(&self) -> Result<Fetched<AccessToken>, String> {
        let provider: Arc<dyn TokenProvider> = match self {
            GcpSource::Adc => gcp_auth::provider().await.map_err(|e| describe(&e))?,
            GcpSource::ServiceAccountFile(path) => {
                Arc::new(CustomServiceAccount::from_file(path).map_err(|e| describe(&e))?)
            }
        };
        let token = provider
            .token(&[vertex::SCOPE])
            .await
            .map_err(|e| describe(&e))?;
        let value = AccessToken::new(token.as_str()).ok_or_else(|| {
            "the token service sent a token that is not a header value".to_string()
        })?;
        Ok(Fetched {
            value,
            expires_at: Some(SystemTime::from(token.expires_at())),
        })
    }
}

/// A `gcp_auth` error with its causes, and with all three reasons when no
/// method worked. Its errors name files, hosts and HTTP failures, never a
/// key or token.
fn describe(e: &gcp_auth::Error) -> String {
    fn chain(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cause = c.source();
        }
        s
    }
    match e {
        gcp_auth::Error::NoAuthMethod(gcloud, metadata, user) => format!(
            "no Google credentials: GOOGLE_APPLICATION_CREDENTIALS is not set; gcloud user credentials: {}; metadata server: {}; gcloud CLI: {}",
            chain(user.as_ref()),
            chain(metadata.as_ref()),
            chain(gcloud.as_ref())
        ),
        other => format!("no Google access token: {}", chain(other)),
    }
}

/// Start refreshing `cell` from `source` until `shutdown`. Meant to be
/// wrapped in a background service at process start.
pub async fn run(cell: Arc<GcpToken>, source: GcpSource, shutdown: watch::Receiver<bool>) {
    cell.run(source, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_do_not_print() {
        let t = AccessToken::new("ya29.secret").unwrap();
        assert!(!format!("{t:?}").contains("ya29"));
        assert!(!format!("{:?}", t.header()).contains("ya29"));
        assert_eq!(t.header().to_str().unwrap(), "Bearer ya29.secret");
    }

    #[tokio::test]
    async fn a_missing_key_file_is_a_reason_not_a_panic() {
        let src = GcpSource::ServiceAccountFile("/nonexistent/steadfast-sa.json".into());
        let err = src.fetch().await.err().unwrap();
        assert!(err.starts_with("no Google access token"), "{err}");
    }
}
