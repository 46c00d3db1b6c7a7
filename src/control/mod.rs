//! Operator control of providers (the admin API): take a provider out
//! of routing now, for a bounded time or until put back, without touching
//! the config.
//!
//! The disabled state itself lives in the provider's health
//! ([`crate::health::ProviderHealth::disable`]), which is kept by provider
//! name across reloads; this module owns what surrounds it:
//!
//! - the operations behind the API, with their audit log lines
//!   (`provider_disabled` / `provider_enabled`: who, what, until when);
//! - the state file that carries disables across a restart or a binary
//!   upgrade ([`state`]), rewritten atomically on every change;
//! - the background service that ends TTLs on time and says so in the log.
//!
//! The HTTP side is in [`api`], the `steadfast provider` command in [`cli`].

pub mod api;
pub mod cli;
pub mod state;

use crate::app::{App, Runtime};
use crate::health::Disabled;
use crate::logging::event;
use crate::provider::Provider;
use async_trait::async_trait;
use log::Level;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest TTL the API takes: a disable meant to outlive a year is a
/// config change, not an incident.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Who asked for a change, for the audit log. Never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// The peer address of the admin connection.
    pub peer: String,
    /// Whether the call presented the admin token (`admin.token_env`).
    pub token: bool,
}

/// The control state of the process: where disables are persisted, and a
/// wake-up for the expiry service.
pub struct Control {
    state_file: Option<PathBuf>,
    /// Serialises state file writes, each from a fresh snapshot, so that an
    /// older snapshot can never overwrite a newer one.
    writing: Mutex<()>,
    changed: Notify,
}

impl Control {
    /// `pid_file` is `server.pid_file` at start; the state file sits next
    /// to it (see [`state::path_for`]).
    pub fn new(pid_file: &str) -> Control {
        Control {
            state_file: state::path_for(Path::new(pid_file)),
            writing: Mutex::new(()),
            changed: Notify::new(),
        }
    }

    pub fn state_file(&self) -> Option<&Path> {
        self.state_file.as_deref()
    }
}

/// The provider `name` of the running config.
pub fn find(rt: &Runtime, name: &str) -> Option<Arc<Provider>> {
    rt.providers.iter().find(|p| p.name() == name).cloned()
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

fn rfc3339(at: Instant) -> String {
    crate::clock::rfc3339(crate::clock::wall(at))
}

/// Disable `p` from now, for `ttl` (`None`: until enabled). A provider
/// already disabled gets the new TTL. Logged, persisted, and returned.
pub fn disable(app: &App, p: &Provider, ttl: Option<Duration>, who: &Who) -> Disabled {
    let now = Instant::now();
    let until = ttl.and_then(|t| now.checked_add(t));
    let was = p.health.disabled(now);
    let d = p.health.disable(now, until);
    event(Level::Warn, "provider_disabled")
        .field("provider", p.name())
        .field("ttl_ms", ttl.map(ms))
        .field("until", until.map(rfc3339))
        .field("peer", who.peer.as_str())
        .field("token", who.token)
        .field("via", "admin_api")
        .field("was_disabled", was.is_some())
        .emit();
    persist(app);
    app.control.changed.notify_one();
    d
}

/// Put `p` back into routing; returns the disable it ended (`None`: it was
/// not disabled, which changes nothing and is logged as such).
pub fn enable(app: &App, p: &Provider, who: &Who) -> Option<Disabled> {
    let now = Instant::now();
    let ended = p.health.enable(now);
    event(Level::Warn, "provider_enabled")
        .field("provider", p.name())
        .field("peer", who.peer.as_str())
        .field("token", who.token)
        .field("via", "admin_api")
        .field("was_disabled", ended.is_some())
        .opt(
            "disabled_ms",
            ended.map(|d| ms(now.saturating_duration_since(d.since))),
        )
        .emit();
    if ended.is_some() {
        persist(app);
        app.control.changed.notify_one();
    }
    ended
}

/// End every disable whose TTL has run out at `now`, logging each once.
/// Returns how many ended.
pub fn expire(app: &App, now: Instant) -> usize {
    let rt = app.runtime();
    let mut ended = 0;
    for p in &rt.providers {
        if let Some(d) = p.health.expire(now) {
            ended += 1;
            event(Level::Warn, "provider_enabled")
                .field("provider", p.name())
                .field("via", "ttl_expired")
                .opt(
                    "ttl_ms",
                    d.until.map(|u| ms(u.saturating_duration_since(d.since))),
                )
                .opt("until", d.until.map(rfc3339))
                .emit();
        }
    }
    // A process handing over to its successor leaves the file to it: both
    // drop an elapsed TTL on their own, and the old one writing last could
    // undo a change made on the new one.
    if ended > 0 && !app.is_draining() {
        persist(app);
    }
    ended
}

/// After a reload: a disabled provider the new config no longer has is
/// gone, and so is its disable. Say so, and persist what is left.
pub fn after_reload(app: &App, old: &Runtime, new: &Runtime) {
    let now = Instant::now();
    let mut dropped = false;
    for p in &old.providers {
        if p.health.disabled(now).is_some() && find(new, p.name()).is_none() {
            dropped = true;
            event(Level::Warn, "provider_enabled")
                .field("provider", p.name())
                .field("via", "removed_from_config")
                .emit();
        }
    }
    if dropped {
        persist(app);
    }
}

/// Write the disables in force to the state file. A failure is logged and
/// otherwise ignored: routing is right either way, only a later restart
/// would forget.
pub fn persist(app: &App) {
    let Some(path) = app.control.state_file() else {
        return;
    };
    let _serial = app
        .control
        .writing
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let rt = app.runtime();
    let entries: Vec<state::Entry> = rt
        .providers
        .iter()
        .filter_map(|p| {
            p.health
                .disabled(now)
                .map(|d| state::Entry::at(p.name(), d))
        })
        .collect();
    if let Err(e) = state::write(path, &entries) {
        event(Level::Error, "state_file_failed")
            .field("path", path.display().to_string())
            .field("error", e.to_string())
            .emit();
    }
}

/// Apply the disables of the state file at start: after a restart or an
/// upgrade, a provider an operator took out stays out. Elapsed entries
/// are dropped; a file that cannot be read or parsed is logged and
/// ignored (starting is more important than remembering).
pub fn restore(app: &App) {
    let Some(path) = app.control.state_file() else {
        return;
    };
    let entries = match state::read(path) {
        Ok(Some(entries)) => entries,
        Ok(None) => return,
        Err(e) => {
            event(Level::Error, "state_file_ignored")
                .field("path", path.display().to_string())
                .field("error", e.to_string())
                .emit();
            return;
        }
    };
    let rt = app.runtime();
    let now = Instant::now();
    let wall_now = std::time::SystemTime::now();
    for e in entries {
        let Some(p) = find(&rt, &e.provider) else {
            event(Level::Warn, "state_file_entry_ignored")
                .field("provider", e.provider.as_str())
                .field("reason", "no such provider in the config")
                .emit();
            continue;
        };
        let Some(until) = e.until_instant(now, wall_now) else {
            continue;
        };
        let d = p.health.disable(now, until);
        event(Level::Warn, "provider_disabled")
            .field("provider", p.name())
            .field("via", "state_file")
            .field("since", e.since.as_str())
            .field(
                "ttl_ms",
                d.until.map(|u| ms(u.saturating_duration_since(now))),
            )
            .field("until", d.until.map(rfc3339))
            .emit();
    }
    // Rewritten without what was dropped.
    persist(app);
}

/// Ends TTLs on time: sleeps until the earliest one, or until a change.
struct Expiry {
    app: Arc<App>,
}

/// Wakes at least this often anyway: a reload may have brought providers
/// whose state it has not looked at.
const MAX_SLEEP: Duration = Duration::from_secs(30);

#[async_trait]
impl BackgroundService for Expiry {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let now = Instant::now();
            expire(&self.app, now);
            let next = self
                .app
                .runtime()
                .providers
                .iter()
                .filter_map(|p| p.health.disabled(now).and_then(|d| d.until))
                .min();
            let sleep = next.map_or(MAX_SLEEP, |t| {
                t.saturating_duration_since(now).min(MAX_SLEEP)
            });
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.app.control.changed.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

pub fn add_service(server: &mut Server, app: Arc<App>) {
    server.add_service(background_service("provider control", Expiry { app }));
}
