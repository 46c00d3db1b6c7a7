//! Active health checks: a background service that sends `GET
//! <base_url><health_check.path>` with the provider's own key to every
//! provider that configures one, on its interval, and feeds the verdict into
//! the same [`super::ProviderHealth`] the request path uses.

use crate::app::App;
use crate::config::{Api, ProbeSettings};
use crate::provider::Provider;
use async_trait::async_trait;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Consecutive failed probes before a provider is marked unhealthy: one
/// lost probe on a busy network is not an outage.
pub const UNHEALTHY_AFTER: u32 = 2;

pub struct Prober {
    app: Arc<App>,
}

pub fn add_service(server: &mut Server, app: Arc<App>) {
    server.add_service(background_service("health prober", Prober { app }));
}

/// Whether a probe's answer means "this provider is up". A 429 is a busy
/// provider, not a dead one.
pub fn probe_ok(status: u16) -> bool {
    (200..400).contains(&status) || status == 429
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut due: HashMap<String, Instant> = HashMap::new();
        let failures: Arc<std::sync::Mutex<HashMap<String, u32>>> = Default::default();
        loop {
            let rt = self.app.runtime();
            let now = Instant::now();
            for p in rt
                .providers
                .iter()
                .filter(|p| p.settings.health_check.is_some())
            {
                let Some(hc) = p.settings.health_check.clone() else {
                    continue;
                };
                let next = due.entry(p.name().to_string()).or_insert(now);
                if *next > now {
                    continue;
                }
                *next = now + hc.interval;
                let (app, p, failures) = (self.app.clone(), p.clone(), failures.clone());
                tokio::spawn(async move {
                    let verdict = probe_once(&app, &p, &hc).await;
                    let ok = verdict.as_ref().is_ok_and(|s| probe_ok(*s));
                    let streak = {
                        let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
                        let n = f.entry(p.name().to_string()).or_insert(0);
                        *n = if ok { 0 } else { *n + 1 };
                        *n
                    };
                    if ok || streak >= UNHEALTHY_AFTER {
                        if let Some(t) = p.health.record_probe(Instant::now(), ok) {
                            crate::telemetry::provider_transition(p.name(), &t);
                        }
                    }
                    if !ok {
                        crate::logging::event(log::Level::Warn, "health_probe_failed")
                            .field("provider", p.name())
                            .field("consecutive", streak)
                            .field(
                                "result",
                                match verdict {
                                    Ok(s) => format!("status {s}"),
                                    Err(e) => e,
                                },
                            )
                            .emit();
                    }
                });
            }
            // Forget providers a reload removed.
            due.retain(|name, _| rt.providers.iter().any(|p| p.name() == name));
            // Wake for the next probe due, not on a fixed tick: an idle
            // sidecar should not wake ten times a second for nothing. A
            // reload that adds a health check is seen within a second.
            let next = due.values().min().copied();
            tokio::select! {
                _ = tokio::time::sleep(next_wake(now, next)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How long the prober sleeps: until the next probe is due, at least a few
/// ms (no spinning on a probe due now) and at most a second (to notice a
/// reload that adds or shortens a health check).
fn next_wake(now: Instant, next_due: Option<Instant>) -> Duration {
    next_due
        .map_or(MAX_WAKE, |t| t.saturating_duration_since(now))
        .clamp(MIN_WAKE, MAX_WAKE)
}

const MIN_WAKE: Duration = Duration::from_millis(5);
const MAX_WAKE: Duration = Duration::from_secs(1);

/// One probe: the upstream's status, or why there was none.
pub async fn probe_once(app: &App, p: &Provider, hc: &ProbeSettings) -> Result<u16, String> {
    let peer = p.peer().ok_or("host not resolved")?;
    let work = async {
        // A fresh connection: a probe must not be fooled by, nor consume,
        // the request path's pooled connections.
        let stream = app
            .transport
            .new_stream(&*peer)
            .await
            .map_err(|e| e.to_string())?;
        let mut up = HttpSession::new_with_options(stream, &*peer);
        let path = format!("{}{}", p.settings.upstream.path_prefix, hc.path);
        let mut req =
            RequestHeader::build("GET", path.as_bytes(), Some(5)).map_err(|e| e.to_string())?;
        let set = |req: &mut RequestHeader, k: &str, v: &str| {
            req.insert_header(k.to_string(), v.to_string())
                .map_err(|e| e.to_string())
        };
        set(&mut req, "host", &p.host_header)?;
        set(
            &mut req,
            "user-agent",
            concat!("steadfast-probe/", env!("CARGO_PKG_VERSION")),
        )?;
        if p.settings.api == Api::Anthropic {
            set(&mut req, "anthropic-version", "2023-06-01")?;
        }
        if let Some((name, value)) = p.key_header() {
            req.insert_header(name.clone(), value.clone())
                .map_err(|e| e.to_string())?;
        }
        up.write_request_header(Box::new(req))
            .await
            .map_err(|e| e.to_string())?;
        up.finish_body().await.map_err(|e| e.to_string())?;
        loop {
            up.read_response().await.map_err(|e| e.to_string())?;
            match up.resp_header() {
                Some(h) if h.status.is_informational() => continue,
                Some(h) => return Ok(h.status.as_u16()),
                None => return Err("no response header".to_string()),
            }
        }
    };
    match tokio::time::timeout(hc.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout after {} ms", hc.timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_up_errors_are_down() {
        assert!(probe_ok(200));
        assert!(probe_ok(204));
        assert!(probe_ok(429));
        assert!(!probe_ok(401));
        assert!(!probe_ok(500));
        assert!(!probe_ok(503));
    }

    #[test]
    fn prober_sleeps_until_the_next_probe_within_bounds() {
        let now = Instant::now();
        assert_eq!(next_wake(now, None), MAX_WAKE);
        let soon = now + Duration::from_millis(250);
        assert_eq!(next_wake(now, Some(soon)), Duration::from_millis(250));
        assert_eq!(next_wake(now, Some(now)), MIN_WAKE);
        assert_eq!(
            next_wake(now, Some(now + Duration::from_secs(30))),
            MAX_WAKE
        );
    }
}
