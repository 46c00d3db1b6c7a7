//! The process's cloud credentials as the request path and the admin
//! listener see them: one AWS cell for every Bedrock provider, one Google
//! cell for every Vertex provider, both owned by [`crate::app::App`] so
//! they outlive reloads, and what one attempt needs from them (the headers
//! that authorise it, or why there are none).
//!
//! The refresh loops that fill the cells run in a background service
//! ([`super::service`]), started while some provider needs them.

use super::aws_credentials::AwsCredentials;
use super::gcp_token::GcpToken;
use super::sigv4::{self, Signable};
use super::{bedrock, CredentialStatus};
use crate::config::ProviderKind;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Notify;

/// The credential cells of the process.
#[derive(Default)]
pub struct CloudAuth {
    pub aws: Arc<AwsCredentials>,
    pub gcp: Arc<GcpToken>,
    /// Woken when a new config is installed: it may need a loop that is
    /// not running yet.
    changed: Notify,
}

impl CloudAuth {
    pub fn new() -> CloudAuth {
        CloudAuth::default()
    }

    /// The credential a provider of `kind` uses; `None` for a direct one.
    pub fn for_kind(&self, kind: &ProviderKind) -> Option<Credential> {
        match kind {
            ProviderKind::Direct => None,
            ProviderKind::Bedrock { region } => Some(Credential::Aws {
                cell: self.aws.clone(),
                region: region.clone(),
            }),
            ProviderKind::Vertex { .. } => Some(Credential::Gcp(self.gcp.clone())),
        }
    }

    /// A config was installed: let the service look at it.
    pub fn config_changed(&self) {
        self.changed.notify_one();
    }

    /// Wait for the next [`CloudAuth::config_changed`] (one that came
    /// while nobody waited counts).
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// One provider's view of its cloud's credentials.
#[derive(Clone)]
pub enum Credential {
    /// SigV4 with the process's AWS credentials, for the provider's region.
    Aws {
        cell: Arc<AwsCredentials>,
        region: String,
    },
    /// A Google access token as a bearer header.
    Gcp(Arc<GcpToken>),
}

impl Credential {
    pub fn status(&self) -> CredentialStatus {
        match self {
            Credential::Aws { cell, .. } => cell.status(),
            Credential::Gcp(cell) => cell.status(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.status() == CredentialStatus::Ready
    }

    /// Ask for fresh credentials soon: the cloud refused the ones held.
    pub fn refresh_soon(&self) {
        match self {
            Credential::Aws { cell, .. } => cell.refresh_soon(),
            Credential::Gcp(cell) => cell.refresh_soon(),
        }
    }

    /// What the credentials are called in messages.
    fn what(&self) -> &'static str {
        match self {
            Credential::Aws { .. } => "AWS credentials",
            Credential::Gcp(_) => "Google access token",
        }
    }

    /// Why there are no credentials to use now, for the attempt's failure
    /// and the logs: free of secrets, as the cell's reasons are.
    pub fn unavailable_reason(&self) -> String {
        let why = match self.status() {
            CredentialStatus::Pending => {
                "still being fetched (the first fetch has not finished)".into()
            }
            CredentialStatus::Unavailable(reason) => reason,
            CredentialStatus::Ready => "expired; refreshing".into(),
        };
        format!("{} unavailable: {why}", self.what())
    }

    /// The headers that authorise `req`, computed now (a SigV4 signature
    /// holds the time), or why it cannot be authorised.
    pub fn authorize(&self, req: &Signable<'_>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        match self {
            Credential::Aws { cell, region } => {
                let creds = cell.current().ok_or_else(|| self.unavailable_reason())?;
                sigv4::sign(
                    req,
                    &creds,
                    region,
                    bedrock::SIGNING_SERVICE,
                    SystemTime::now(),
                )
                .map_err(|e| e.to_string())
            }
            Credential::Gcp(cell) => {
                let token = cell.current().ok_or_else(|| self.unavailable_reason())?;
                Ok(vec![(http::header::AUTHORIZATION, token.header().clone())])
            }
        }
    }
}

/// A cloud provider's credentials in its `/health` entry:
/// `"credentials": "ready|pending|unavailable"`, and the reason as
/// `"credentials_error"` when they are unavailable.
pub fn describe_status(status: &CredentialStatus, provider: &mut serde_json::Value) {
    provider["credentials"] = status.as_str().into();
    if let CredentialStatus::Unavailable(reason) = status {
        provider["credentials_error"] = reason.as_str().into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signable() -> Signable<'static> {
        Signable {
            method: "POST",
            host: "bedrock-runtime.us-east-1.amazonaws.com",
            path: "/model/m/invoke",
            headers: &[],
            body: b"{}",
        }
    }

    #[test]
    fn no_credentials_yet_is_a_reason_not_a_header() {
        let auth = CloudAuth::new();
        assert!(auth.for_kind(&ProviderKind::Direct).is_none());
        let aws = auth
            .for_kind(&ProviderKind::Bedrock {
                region: "us-east-1".into(),
            })
            .unwrap();
        assert_eq!(aws.status(), CredentialStatus::Pending);
        assert!(!aws.is_ready());
        let err = aws.authorize(&signable()).unwrap_err();
        assert!(
            err.starts_with("AWS credentials unavailable: still being fetched"),
            "{err}"
        );
        let gcp = auth
            .for_kind(&ProviderKind::Vertex {
                region: "global".into(),
                project: "p".into(),
            })
            .unwrap();
        let err = gcp.authorize(&signable()).unwrap_err();
        assert!(err.starts_with("Google access token unavailable"), "{err}");
    }
}
