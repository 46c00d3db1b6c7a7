//! The background service that keeps the process's cloud credentials
//! fresh: it runs the AWS refresh loop while the config has a Bedrock
//! provider and the Google one while it has a Vertex provider, starting a
//! loop when a reload adds the first such provider and stopping it when a
//! reload removes the last. A process without cloud providers never asks
//! a credential service anything (no instance-metadata lookups on a plain
//! Anthropic sidecar), and no warning about missing credentials nobody
//! needs fills its logs.
//!
//! It also reports each cell's changes as events: `cloud_credentials_ready`
//! and `cloud_credentials_unavailable` (with the secret-free reason and the
//! providers affected).

use super::auth::CloudAuth;
use super::gcp_token::{self, GcpSource};
use super::refresh::Refreshed;
use super::{aws_credentials, CredentialStatus};
use crate::app::{App, Runtime};
use crate::config::ProviderKind;
use crate::logging::event;
use async_trait::async_trait;
use log::Level;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct CredentialService {
    app: Arc<App>,
}

pub fn add_service(server: &mut Server, app: Arc<App>) {
    server.add_service(background_service(
        "cloud credentials",
        CredentialService { app },
    ));
}

/// Which loops a config needs: the AWS one (with the region of its first
/// Bedrock provider, used for STS when the environment names none) and
/// the Google one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    pub aws_region: Option<String>,
    pub gcp: bool,
}

pub fn needs<'a>(kinds: impl IntoIterator<Item = &'a ProviderKind>) -> Needs {
    let mut n = Needs::default();
    for k in kinds {
        match k {
            ProviderKind::Bedrock { region } if n.aws_region.is_none() => {
                n.aws_region = Some(region.clone())
            }
            ProviderKind::Vertex { .. } => n.gcp = true,
            _ => {}
        }
    }
    n
}

/// One refresh loop as the service runs it.
#[derive(Default)]
struct Running {
    stop: Option<watch::Sender<bool>>,
    /// The loop's task, kept after a stop: a restart waits for it, since
    /// a cell runs one loop at a time.
    task: Option<JoinHandle<()>>,
}

impl Running {
    fn is_on(&self) -> bool {
        self.stop.is_some()
    }

    /// Start the loop `run` makes of a stop signal, after the previous
    /// one has ended.
    fn start<F, Fut>(&mut self, run: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let previous = self.task.take();
        self.task = Some(tokio::spawn(async move {
            if let Some(p) = previous {
                let _ = p.await;
            }
            run(rx).await
        }));
        self.stop = Some(tx);
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
    }
}

#[async_trait]
impl BackgroundService for CredentialService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let auth: &CloudAuth = &self.app.cloud;
        let mut aws = Running::default();
        let mut gcp = Running::default();
        let app = self.app.clone();
        let reporters = [
            tokio::spawn(report(app.clone(), auth.aws.clone(), "aws", |k| {
                matches!(k, ProviderKind::Bedrock { .. })
            })),
            tokio::spawn(report(app, auth.gcp.clone(), "google", |k| {
                matches!(k, ProviderKind::Vertex { .. })
            })),
        ];
        loop {
            let rt = self.app.runtime();
            let want = needs(rt.providers.iter().map(|p| &p.settings.kind));
            match (&want.aws_region, aws.is_on()) {
                (Some(region), false) => {
                    let (cell, region) = (auth.aws.clone(), region.clone());
                    aws.start(move |stop| aws_credentials::run(cell, region, stop));
                }
                (None, true) => aws.stop(),
                _ => {}
            }
            match (want.gcp, gcp.is_on()) {
                (true, false) => {
                    let cell = auth.gcp.clone();
                    gcp.start(move |stop| gcp_token::run(cell, GcpSource::Adc, stop));
                }
                (false, true) => gcp.stop(),
                _ => {}
            }
            tokio::select! {
                _ = auth.changed() => {}
                _ = shutdown.changed() => break,
            }
        }
        aws.stop();
        gcp.stop();
        for r in reporters {
            r.abort();
        }
    }
}

/// Log each change of a cell's status, naming the providers it serves.
async fn report<T: Send + Sync + 'static>(
    app: Arc<App>,
    cell: Arc<Refreshed<T>>,
    cloud: &'static str,
    uses: fn(&ProviderKind) -> bool,
) {
    let mut w = cell.watch();
    let mut last = CredentialStatus::Pending;
    while w.changed().await.is_ok() {
        let now = w.borrow_and_update().clone();
        if now == last {
            continue;
        }
        let providers = users(&app.runtime(), uses);
        match &now {
            CredentialStatus::Ready => event(Level::Info, "cloud_credentials_ready")
                .field("cloud", cloud)
                .field("providers", providers)
                .emit(),
            CredentialStatus::Unavailable(reason) => {
                event(Level::Warn, "cloud_credentials_unavailable")
                    .field("cloud", cloud)
                    .field("providers", providers)
                    .field("reason", reason.as_str())
                    .emit()
            }
            CredentialStatus::Pending => {}
        }
        last = now;
    }
}

fn users(rt: &Runtime, uses: fn(&ProviderKind) -> bool) -> Vec<String> {
    rt.providers
        .iter()
        .filter(|p| uses(&p.settings.kind))
        .map(|p| p.name().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_run_for_the_clouds_a_config_uses() {
        let b = |r: &str| ProviderKind::Bedrock { region: r.into() };
        let v = ProviderKind::Vertex {
            region: "global".into(),
            project: "p".into(),
        };
        assert_eq!(needs([&ProviderKind::Direct]), Needs::default());
        assert_eq!(
            needs([&ProviderKind::Direct, &b("eu-west-1"), &b("us-east-1")]),
            Needs {
                aws_region: Some("eu-west-1".into()),
                gcp: false
            }
        );
        assert_eq!(
            needs([&v]),
            Needs {
                aws_region: None,
                gcp: true
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_loop_waits_for_the_stopped_one() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let live = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let mut r = Running::default();
        let run = |live: Arc<AtomicU32>, most: Arc<AtomicU32>| {
            move |mut stop: watch::Receiver<bool>| async move {
                let n = live.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                let _ = stop.wait_for(|s| *s).await;
                // A fetch in flight when the stop came.
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                live.fetch_sub(1, Ordering::SeqCst);
            }
        };
        r.start(run(live.clone(), most.clone()));
        tokio::task::yield_now().await;
        r.stop();
        assert!(!r.is_on());
        r.start(run(live.clone(), most.clone()));
        assert!(r.is_on());
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        assert_eq!(live.load(Ordering::SeqCst), 1, "the second loop runs");
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
    }
}
