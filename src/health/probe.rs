//! Probes: a background service that sends `GET` probes to providers and
//! feeds the verdicts into the same [`super::ProviderHealth`] the request
//! path uses. Two kinds share one loop:
//!
//! - health checks, for providers with a `health_check`, on its interval;
//! - recovery probes of ejected providers, whenever their breaker says one
//!   is due ([`super::ProviderHealth::recovery_probe_due`]): when an
//!   ejection ends and nothing else decides it, and every
//!   `health.recovery_probe_interval_ms` during a long ejection. A recovery
//!   probe is the provider's health check when it has one; otherwise `GET
//!   /v1/models`, which only has to show that the server answers.
//!
//! Every probe goes on a fresh connection, with the provider's own key when
//! it has one and no credential at all otherwise.
//!
//! A cloud provider (`kind: bedrock|vertex`) serves no `/v1/models`, and an
//! unsigned request proves nothing about a signed one; its only request
//! costs tokens. Its recovery probe is therefore [`Check::Reachable`]:
//! its credentials are at hand and its endpoint accepts a connection
//! (TCP and TLS), with no request sent. Weaker evidence than a request, as
//! any probe is: the circuit it closes is on probation, and the next real
//! failure reopens it. It is what brings back a provider ejected for
//! missing credentials once they arrive, without waiting out the longest
//! ejection.

use crate::app::App;
use crate::config::{Api, HealthSettings, ProbeSettings, ProviderSettings};
use crate::health::{Policy, ProbeReport, ProviderHealth};
use crate::outcome::ErrorClass;
use crate::provider::Provider;
use async_trait::async_trait;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Consecutive failed health checks before a provider is marked unhealthy:
/// one lost probe on a busy network is not an outage.
pub const UNHEALTHY_AFTER: u32 = 2;

/// What a recovery probe asks a provider without a health check: served by
/// both APIs, cheap, and costs no tokens.
pub const LIVENESS_PATH: &str = "/v1/models";

static WAKE: Notify = Notify::const_new();

/// Have the prober look at every provider again now: an ejection began, so
/// its recovery probes need scheduling.
pub fn wake() {
    WAKE.notify_one();
}

pub struct Prober {
    app: Arc<App>,
}

pub fn add_service(server: &mut Server, app: Arc<App>) {
    server.add_service(background_service("health prober", Prober { app }));
}

/// How a probe's answer is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The operator's `health_check.path`: it must answer 2xx or 3xx.
    HealthCheck,
    /// Any answer below 500 shows the server is up.
    Liveness,
    /// A cloud provider: credentials ready and a connection accepted; no
    /// request is sent ([`reachable`]).
    Reachable,
}

/// What one probe sends and how its answer is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub path: String,
    pub timeout: Duration,
    pub check: Check,
}

impl Target {
    pub fn health_check(hc: &ProbeSettings) -> Target {
        Target {
            path: hc.path.clone(),
            timeout: hc.timeout,
            check: Check::HealthCheck,
        }
    }

    /// A recovery probe: the provider's health check when it has one.
    pub fn recovery(p: &ProviderSettings, health: &HealthSettings) -> Target {
        match &p.health_check {
            Some(hc) => Target::health_check(hc),
            None if p.kind.is_cloud() => Target {
                path: String::new(),
                timeout: health.probe_timeout(),
                check: Check::Reachable,
            },
            None => Target {
                path: LIVENESS_PATH.to_string(),
                timeout: health.probe_timeout(),
                check: Check::Liveness,
            },
        }
    }
}

/// Why a probe got no status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("{0}")]
    Network(String),
    /// A cloud provider has no credentials to sign with.
    #[error("{0}")]
    Credentials(String),
}

fn net(e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Network(e.to_string())
}

/// Whether a probe's answer shows a live provider, else the class of the
/// failure. A 429 is a busy provider, not a dead one. A 401/403 to a probe
/// carrying steadfast's own key means that key is rejected, so the
/// provider cannot serve; a passthrough provider's probe carries no
/// credential at all, so there a refusal is what a live server answers.
pub fn verdict(
    answer: &Result<u16, ProbeError>,
    check: Check,
    keyed: bool,
) -> Result<(), ErrorClass> {
    let status = match answer {
        Ok(s) => *s,
        Err(ProbeError::Timeout(_)) => return Err(ErrorClass::Timeout),
        Err(ProbeError::Network(_)) => return Err(ErrorClass::Network),
        Err(ProbeError::Credentials(_)) => return Err(ErrorClass::Auth),
    };
    match status {
        _ if check == Check::Reachable => Ok(()),
        401 | 403 if keyed => Err(ErrorClass::Auth),
        401 | 403 | 429 => Ok(()),
        500.. => Err(ErrorClass::Server),
        200..=399 => Ok(()),
        _ if check == Check::Liveness => Ok(()),
        s => Err(crate::outcome::classify_status(s).unwrap_or(ErrorClass::Server)),
    }
}

/// Consecutive failed probes per provider name.
#[derive(Clone, Default)]
struct Streaks(Arc<Mutex<HashMap<String, u32>>>);

impl Streaks {
    fn bump(&self, name: &str, ok: bool) -> u32 {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(name.to_string()).or_insert(0);
        *n = if ok { 0 } else { *n + 1 };
        *n
    }
}

/// A claimed recovery probe, given back if its task ends without a verdict
/// (otherwise the provider would never be probed again).
struct Claim(Option<Arc<ProviderHealth>>);

impl Claim {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abandon_recovery_probe();
        }
    }
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // When each provider's next health check is due.
        let mut due: HashMap<String, Instant> = HashMap::new();
        let streaks = Streaks::default();
        loop {
            let rt = self.app.runtime();
            let now = Instant::now();
            let mut wake_at: Option<Instant> = None;
            for p in &rt.providers {
                let name = p.name();
                // A disabled provider gets no traffic, probes included; its
                // checks resume within a wake (1 s) of being enabled.
                if p.health.disabled(now).is_some() {
                    continue;
                }
                let hc = p.settings.health_check.as_ref();
                let recovery_target = Target::recovery(&p.settings, &rt.config.health);
                let recovery =
                    p.health
                        .begin_recovery_probe(now, &rt.policy, recovery_target.timeout);
                let check_due = hc.map(|_| *due.entry(name.to_string()).or_insert(now));
                if recovery || check_due.is_some_and(|t| t <= now) {
                    // A recovery probe of a provider with a health check is
                    // that health check, a little early.
                    if let Some(hc) = hc {
                        due.insert(name.to_string(), now + hc.interval);
                    }
                    let target = match hc {
                        Some(hc) if !recovery => Target::health_check(hc),
                        _ => recovery_target,
                    };
                    tokio::spawn(probe_and_record(
                        self.app.clone(),
                        p.clone(),
                        target,
                        recovery,
                        rt.policy,
                        streaks.clone(),
                    ));
                }
                let next = [
                    due.get(name).copied(),
                    p.health.recovery_probe_due(now, &rt.policy),
                ];
                for t in next.into_iter().flatten() {
                    wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                }
            }
            // Forget providers a reload removed.
            due.retain(|name, _| rt.providers.iter().any(|p| p.name() == name));
            // Wake for the next probe due, not on a fixed tick: an idle
            // sidecar should not wake ten times a second for nothing. A
            // reload that adds a health check is seen within a second, an
            // ejection at once.
            tokio::select! {
                _ = tokio::time::sleep(next_wake(now, wake_at)) => {}
                _ = WAKE.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn probe_and_record(
    app: Arc<App>,
    p: Arc<Provider>,
    target: Target,
    recovery: bool,
    policy: Policy,
    streaks: Streaks,
) {
    let claim = Claim(recovery.then(|| p.health.clone()));
    let sent_at = Instant::now();
    let answer = match target.check {
        Check::Reachable => reachable(&app, &p, &target).await,
        Check::HealthCheck | Check::Liveness => probe_once(&app, &p, &target).await,
    };
    let verdict = verdict(&answer, target.check, p.key().is_some());
    let streak = streaks.bump(p.name(), verdict.is_ok());
    let report = ProbeReport {
        sent_at,
        verdict,
        mark_unhealthy: target.check == Check::HealthCheck && streak >= UNHEALTHY_AFTER,
        recovery,
    };
    claim.done();
    let transition = p
        .health
        .record_probe(Instant::now(), report, &policy, fastrand::f64());
    // The verdict may have opened or closed a circuit: reschedule.
    wake();
    if verdict.is_err() {
        let (level, name) = if recovery {
            (log::Level::Info, "recovery_probe_failed")
        } else {
            (log::Level::Warn, "health_probe_failed")
        };
        crate::logging::event(level, name)
            .field("provider", p.name())
            // Without its query: a key there must not reach the logs.
            .field("path", target.path.split('?').next().unwrap_or(""))
            .field("consecutive", streak)
            .field(
                "result",
                match answer {
                    Ok(_) if target.check == Check::Reachable => "connected".to_string(),
                    Ok(s) => format!("status {s}"),
                    Err(e) => e.to_string(),
                },
            )
            .emit();
    }
    if let Some(t) = transition {
        crate::telemetry::provider_transition(p.name(), &t);
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
pub async fn probe_once(app: &App, p: &Provider, target: &Target) -> Result<u16, ProbeError> {
    let peer = p
        .peer()
        .ok_or_else(|| ProbeError::Network("host not resolved".into()))?;
    let work = async {
        // A fresh connection: a probe must not be fooled by, nor consume,
        // the request path's pooled connections.
        let stream = app.transport.new_stream(&*peer).await.map_err(net)?;
        let mut up = HttpSession::new_with_options(stream, &*peer);
        let path = format!("{}{}", p.settings.upstream.path_prefix, target.path);
        let mut req = RequestHeader::build("GET", path.as_bytes(), Some(5)).map_err(net)?;
        let set = |req: &mut RequestHeader, k: &str, v: &str| {
            req.insert_header(k.to_string(), v.to_string()).map_err(net)
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
        if let Some(k) = p.key() {
            req.insert_header(k.name.clone(), k.value.clone())
                .map_err(net)?;
        }
        up.write_request_header(Box::new(req)).await.map_err(net)?;
        up.finish_body().await.map_err(net)?;
        loop {
            up.read_response().await.map_err(net)?;
            match up.resp_header() {
                Some(h) if h.status.is_informational() => continue,
                Some(h) => return Ok(h.status.as_u16()),
                None => return Err(ProbeError::Network("no response header".into())),
            }
        }
    };
    match tokio::time::timeout(target.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(target.timeout.as_millis())),
    }
}

/// A cloud provider's probe ([`Check::Reachable`]): its credentials, then
/// a fresh connection to its endpoint, closed at once. `Ok(0)`: no status,
/// since no request went.
pub async fn reachable(app: &App, p: &Provider, target: &Target) -> Result<u16, ProbeError> {
    if let Some(c) = p.credential.as_ref().filter(|c| !c.is_ready()) {
        return Err(ProbeError::Credentials(c.unavailable_reason()));
    }
    let peer = p
        .peer()
        .ok_or_else(|| ProbeError::Network("host not resolved".into()))?;
    match tokio::time::timeout(target.timeout, app.transport.new_stream(&*peer)).await {
        Ok(Ok(_stream)) => Ok(0),
        Ok(Err(e)) => Err(net(e)),
        Err(_) => Err(ProbeError::Timeout(target.timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(status: u16, check: Check, keyed: bool) -> Result<(), ErrorClass> {
        verdict(&Ok(status), check, keyed)
    }

    #[test]
    fn health_check_wants_success_and_takes_busy_as_up() {
        let hc = Check::HealthCheck;
        assert_eq!(judge(200, hc, true), Ok(()));
        assert_eq!(judge(204, hc, true), Ok(()));
        assert_eq!(judge(301, hc, true), Ok(()));
        assert_eq!(judge(429, hc, true), Ok(()));
        assert_eq!(judge(404, hc, true), Err(ErrorClass::Request));
        assert_eq!(judge(500, hc, true), Err(ErrorClass::Server));
        assert_eq!(judge(503, hc, false), Err(ErrorClass::Server));
        assert_eq!(judge(529, hc, true), Err(ErrorClass::Server));
    }

    #[test]
    fn liveness_takes_any_answer_below_500_as_up() {
        let l = Check::Liveness;
        for s in [200, 204, 301, 400, 404, 405, 429] {
            assert_eq!(judge(s, l, true), Ok(()), "{s}");
            assert_eq!(judge(s, l, false), Ok(()), "{s}");
        }
        assert_eq!(judge(500, l, false), Err(ErrorClass::Server));
        assert_eq!(judge(502, l, true), Err(ErrorClass::Server));
    }

    #[test]
    fn a_refusal_means_a_bad_key_only_when_steadfast_sent_one() {
        for check in [Check::HealthCheck, Check::Liveness] {
            assert_eq!(judge(401, check, true), Err(ErrorClass::Auth));
            assert_eq!(judge(403, check, true), Err(ErrorClass::Auth));
            // Passthrough: the probe carries no credential, a live server
            // refuses it.
            assert_eq!(judge(401, check, false), Ok(()));
            assert_eq!(judge(403, check, false), Ok(()));
        }
    }

    #[test]
    fn no_answer_is_network_or_timeout() {
        let l = Check::Liveness;
        assert_eq!(
            verdict(&Err(ProbeError::Timeout(3000)), l, true),
            Err(ErrorClass::Timeout)
        );
        assert_eq!(
            verdict(&Err(ProbeError::Network("refused".into())), l, false),
            Err(ErrorClass::Network)
        );
    }

    #[test]
    fn recovery_probe_is_the_health_check_when_there_is_one() {
        let cfg = crate::config::load(&crate::config::ConfigSource::Builtin, &|_| None)
            .expect("built-in config");
        let mut p = cfg.providers[0].clone();
        assert_eq!(
            Target::recovery(&p, &cfg.health),
            Target {
                path: "/v1/models".into(),
                timeout: Duration::from_millis(3000),
                check: Check::Liveness,
            }
        );
        let hc = ProbeSettings {
            path: "/healthz".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_millis(700),
        };
        p.health_check = Some(hc.clone());
        assert_eq!(Target::recovery(&p, &cfg.health), Target::health_check(&hc));
    }

    #[test]
    fn a_cloud_provider_is_probed_for_reachability_not_with_a_request() {
        let cfg = crate::config::load(&crate::config::ConfigSource::Builtin, &|_| None)
            .expect("built-in config");
        let mut p = cfg.providers[0].clone();
        p.kind = crate::config::ProviderKind::Bedrock {
            region: "us-east-1".into(),
        };
        let t = Target::recovery(&p, &cfg.health);
        assert_eq!(t.check, Check::Reachable);
        assert_eq!(t.timeout, cfg.health.probe_timeout());
        // Connected: up, whatever "status" stands in; no credentials: auth.
        assert_eq!(verdict(&Ok(0), Check::Reachable, false), Ok(()));
        assert_eq!(
            verdict(
                &Err(ProbeError::Credentials(
                    "AWS credentials unavailable".into()
                )),
                Check::Reachable,
                false
            ),
            Err(ErrorClass::Auth)
        );
        assert_eq!(
            verdict(
                &Err(ProbeError::Network("refused".into())),
                Check::Reachable,
                false
            ),
            Err(ErrorClass::Network)
        );
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
