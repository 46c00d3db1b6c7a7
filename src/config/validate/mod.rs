//! Semantic validation: turns a parsed [`FileConfig`] into a typed
//! [`Config`], collecting every problem as `path.to.key: reason`.
//!
//! One file per config section. Each section validator takes the shared
//! error list and its part of the file, and returns that section's typed
//! settings, or `None` once it has reported a problem; so one pass reports
//! every error, and [`validate()`] only runs the sections in file order and
//! assembles the result.

mod admin;
mod client_auth;
mod cloud;
mod health;
mod limits;
mod logging;
mod providers;
mod retry;
mod routes;
mod server;
mod telemetry;
#[cfg(test)]
mod tests;
mod timeouts;

use super::schema::FileConfig;
use super::*;

/// How config reads environment variables (keys, client and admin tokens); a closure
/// so tests do not have to mutate the process environment.
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigError::new(path, reason));
    }

    #[cfg(test)]
    fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

/// Checks every section of `f`, reading provider keys and client tokens
/// through `env`: the typed config, or every problem found, in file order.
pub fn validate(
    f: &FileConfig,
    source: ConfigSource,
    env: &EnvLookup,
) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Errors(Vec::new());

    let listen = server::listen(&mut errs, &f.listen);
    let server = server::server(&mut errs, &f.server);
    let limits = limits::limits(&mut errs, &f.limits);
    timeouts::check_timeouts(&mut errs, "timeouts", &f.timeouts);
    let retry = retry::retry(&mut errs, &f.retry);
    let health = health::health(&mut errs, &f.health);
    // Probe defaults only; when `health` is invalid the result is discarded.
    let active = health.as_ref().and_then(|h| h.active);
    let providers = providers::providers(&mut errs, &f.providers, &f.timeouts, active, env);
    let routes = routes::routes(&mut errs, &f.routes, &providers, &f.providers);
    let client_tokens = client_auth::client_auth(&mut errs, f.client_auth.as_ref(), env);
    let admin_token = admin::admin(&mut errs, &f.admin, env);
    let logging = logging::logging(&mut errs, &f.logging);
    let telemetry = telemetry::telemetry(&mut errs, &f.telemetry);

    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    // Both addresses parsed, otherwise errs would not be empty.
    let Some((listen_proxy, listen_admin)) = listen else {
        return Err(vec![ConfigError::new("listen", "invalid address")]);
    };
    // Likewise: a section returns None only after reporting why.
    let (Some(server), Some(limits), Some(retry), Some(health), Some(logging)) =
        (server, limits, retry, health, logging)
    else {
        return Err(vec![ConfigError::new(
            "",
            "a config section was rejected without a reason",
        )]);
    };
    Ok(Config {
        source,
        listen_proxy,
        listen_admin,
        server,
        limits,
        retry,
        health,
        providers,
        routes,
        client_tokens,
        admin_token,
        logging,
        telemetry,
    })
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}
