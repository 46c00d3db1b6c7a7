//! Provider DNS, resolved off the request path: a background service
//! re-resolves every provider host periodically (quickly while a host has
//! never resolved) and swaps the new address into the provider's peer.

use crate::app::App;
use async_trait::async_trait;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use std::sync::Arc;
use std::time::Duration;

const REFRESH: Duration = Duration::from_secs(30);
const RETRY_UNRESOLVED: Duration = Duration::from_secs(2);

pub struct Resolver {
    app: Arc<App>,
}

pub fn add_service(server: &mut Server, app: Arc<App>) {
    server.add_service(background_service("dns resolver", Resolver { app }));
}

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Providers whose failure was already logged: one line per outage.
        let mut failing = std::collections::HashSet::new();
        loop {
            let rt = self.app.runtime();
            let mut unresolved = false;
            for p in &rt.providers {
                if crate::provider::literal_address(&p.settings.upstream).is_some() {
                    continue;
                }
                let u = &p.settings.upstream;
                let lookup = tokio::net::lookup_host((u.host.as_str(), u.port));
                match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                    Ok(Ok(mut addrs)) => {
                        if let Some(a) = addrs.next() {
                            p.set_address(a);
                            failing.remove(p.name());
                        }
                    }
                    _ => {
                        if p.peer().is_none() {
                            unresolved = true;
                        }
                        if failing.insert(p.name().to_string()) {
                            crate::logging::event(log::Level::Warn, "dns_failed")
                                .field("provider", p.name())
                                .field("host", u.host.as_str())
                                .emit();
                        }
                    }
                }
            }
            let wait = if unresolved {
                RETRY_UNRESOLVED
            } else {
                REFRESH
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
