//! Hot reload: SIGHUP, or a change of the config file's content,
//! re-reads and validates the config and swaps it in atomically. Requests in
//! flight keep the snapshot they started with; provider health carries over
//! by name; an invalid file changes nothing.
//!
//! The same watcher re-reads provider key files (`api_key_file`)
//! with the same rule: a changed, good key is swapped in for the next
//! attempt; an empty or unreadable file keeps the key in use and says why
//! (see [`crate::keys`]).

use crate::app::App;
use crate::config::{self, Config, ConfigSource};
use crate::keys::{self, Action, KeyProblem};
use crate::logging::event;
use async_trait::async_trait;
use log::Level;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How often the config file and key files are checked for changes.
/// Kubernetes ConfigMap and Secret updates take tens of seconds to land, so
/// a second is plenty.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub struct Reloader {
    app: Arc<App>,
}

pub fn add_service(server: &mut Server, app: Arc<App>) {
    server.add_service(background_service("config reloader", Reloader { app }));
}

/// A cheap fingerprint of the file's current content. Reading through the
/// path follows symlinks, so a ConfigMap's `..data` swap is seen too.
fn fingerprint(source: &ConfigSource) -> Option<u64> {
    let ConfigSource::File(path) = source else {
        return None;
    };
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                event(Level::Error, "signal_setup_failed")
                    .field("signal", "SIGHUP")
                    .field("error", e.to_string())
                    .emit();
                return;
            }
        };
        let source = self.app.runtime().config.source.clone();
        let mut seen = fingerprint(&source);
        let mut key_problems = HashMap::new();
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    reload(&self.app, "signal").await;
                    seen = fingerprint(&source);
                }
                _ = tokio::time::sleep(WATCH_INTERVAL) => {
                    let now = fingerprint(&source);
                    // A file that vanished mid-swap is not a change yet.
                    if now.is_some() && now != seen {
                        seen = now;
                        reload(&self.app, "file_change").await;
                    }
                    check_keys(&self.app, &mut key_problems);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Re-read, validate and install the config. Returns whether it was taken.
pub async fn reload(app: &App, trigger: &str) -> bool {
    let current = app.runtime();
    let source = current.config.source.clone();
    let loaded = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || {
            let env = |k: &str| std::env::var(k).ok();
            config::load(&source, &env)
        })
        .await
    };
    let cfg = match loaded {
        Ok(Ok(cfg)) => cfg,
        Ok(Err(errs)) => {
            crate::telemetry::config_reloaded(false);
            event(Level::Error, "config_rejected")
                .field("trigger", trigger)
                .field("config", source.describe())
                .field(
                    "errors",
                    errs.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                )
                .field("kept_generation", current.generation)
                .emit();
            return false;
        }
        Err(e) => {
            crate::telemetry::config_reloaded(false);
            event(Level::Error, "config_rejected")
                .field("trigger", trigger)
                .field("errors", vec![format!("reload task failed: {e}")])
                .emit();
            return false;
        }
    };
    for (key, why) in fixed_at_start(&current.config, &cfg) {
        event(Level::Warn, "config_change_ignored")
            .field("key", key)
            .field("reason", why)
            .emit();
    }
    let addrs = resolve(&cfg).await;
    crate::logging::set_format(cfg.logging.format);
    let (providers, routes) = (cfg.providers.len(), cfg.routes.len());
    let rt = app.install(cfg, &addrs);
    crate::control::after_reload(app, &current, &rt);
    crate::telemetry::config_reloaded(true);
    event(Level::Info, "config_reloaded")
        .field("trigger", trigger)
        .field("config", source.describe())
        .field("generation", rt.generation)
        .field("providers", providers)
        .field("routes", routes)
        .emit();
    true
}

/// Re-read the key file of every provider that has one. `problems` holds,
/// by provider, the problem last reported, so a file that stays broken is
/// reported once. Contents are compared, not timestamps: an atomic rename
/// or a `..data` symlink swap is seen alike, and rewriting the same key is
/// no rotation.
fn check_keys(app: &App, problems: &mut HashMap<String, Option<KeyProblem>>) {
    let rt = app.runtime();
    for p in &rt.providers {
        let Some(path) = &p.settings.key_file else {
            continue;
        };
        let reported = problems.entry(p.name().to_string()).or_default();
        let path_text = path.display().to_string();
        match keys::decide(keys::read_file(path), |k| p.key_is(k), reported) {
            Action::Nothing => {}
            Action::Install(key) => {
                let installed = p.rotate_key(key);
                crate::telemetry::key_reloaded(p.name(), installed);
                if installed {
                    event(Level::Info, "provider_key_reloaded")
                        .field("provider", p.name())
                        .field("path", path_text)
                        .field("generation", rt.generation)
                        .emit();
                } else {
                    event(Level::Error, "provider_key_rejected")
                        .field("provider", p.name())
                        .field("path", path_text)
                        .field("reason", "the provider has no key of its own to replace")
                        .field("kept", "previous key")
                        .emit();
                }
            }
            Action::Reject(problem) => {
                crate::telemetry::key_reloaded(p.name(), false);
                event(Level::Error, "provider_key_rejected")
                    .field("provider", p.name())
                    .field("path", path_text)
                    .field("reason", format!("key file {problem}"))
                    .field("kept", "previous key")
                    .emit();
            }
        }
    }
    problems.retain(|name, _| {
        rt.providers
            .iter()
            .any(|p| p.name() == name && p.settings.key_file.is_some())
    });
}

/// Settings that belong to the listening sockets and the process; a reload
/// cannot apply them (an upgrade or restart can).
fn fixed_at_start(old: &Config, new: &Config) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let restart =
        "applies only at start: restart or upgrade (SIGQUIT + serve --upgrade) to change it";
    if old.listen_proxy != new.listen_proxy {
        out.push(("listen.proxy", restart));
    }
    if old.listen_admin != new.listen_admin {
        out.push(("listen.admin", restart));
    }
    if old.server.threads != new.server.threads {
        out.push(("server.threads", restart));
    }
    if old.server.work_stealing != new.server.work_stealing {
        out.push(("server.work_stealing", restart));
    }
    if old.server.pid_file != new.server.pid_file {
        out.push(("server.pid_file", restart));
    }
    if old.server.upgrade_sock != new.server.upgrade_sock {
        out.push(("server.upgrade_sock", restart));
    }
    // The exporter and the sampling decision are process-wide.
    if old.telemetry != new.telemetry {
        out.push(("telemetry", restart));
    }
    out
}

/// Resolve provider hosts off the runtime's worker threads.
async fn resolve(cfg: &Config) -> Vec<Option<SocketAddr>> {
    let mut out = Vec::with_capacity(cfg.providers.len());
    for p in &cfg.providers {
        let u = &p.upstream;
        let addr = match crate::provider::literal_address(u) {
            Some(a) => Some(a),
            None => {
                let lookup = tokio::net::lookup_host((u.host.as_str(), u.port));
                match tokio::time::timeout(Duration::from_secs(3), lookup).await {
                    Ok(Ok(mut it)) => it.next(),
                    _ => None,
                }
            }
        };
        out.push(addr);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        let f = config::schema::FileConfig {
            ..serde_yaml::from_str(yaml).unwrap()
        };
        config::validate(&f, ConfigSource::Builtin, &|_| None).unwrap()
    }

    #[test]
    fn listener_changes_are_reported_not_applied() {
        let base = "providers: [{name: a, api: anthropic, base_url: \"http://127.0.0.1:1\"}]\nroutes: [{name: r, paths: [\"/\"], providers: [a]}]\n";
        let a = cfg(base);
        let b = cfg(&format!(
            "listen: {{ proxy: \"127.0.0.1:1234\" }}\nserver: {{ threads: 8, work_stealing: false }}\ntelemetry: {{ otlp_endpoint: \"http://127.0.0.1:4317\" }}\n{base}"
        ));
        let keys: Vec<_> = fixed_at_start(&a, &b).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                "listen.proxy",
                "server.threads",
                "server.work_stealing",
                "telemetry"
            ]
        );
        assert!(fixed_at_start(&a, &a).is_empty());
    }
}
