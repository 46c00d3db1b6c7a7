//! The provider control endpoints of the admin listener:
//!
//! - `GET /providers`: every provider with its state;
//! - `GET /providers/{name}`: one of them;
//! - `POST /providers/{name}/disable[?ttl_ms=N]`: take it out of routing,
//!   for N ms or until enabled;
//! - `POST /providers/{name}/enable`: put it back.
//!
//! Reads are open like `/health`. A state-changing call needs the admin
//! token as `Authorization: Bearer` when `admin.token_env` is set, and is
//! otherwise taken from loopback only, so an admin listener on every
//! interface (for probes and Prometheus) is not an open door. Every answer
//! is JSON; every refusal says why.

use super::{Who, MAX_TTL};
use crate::app::{App, Runtime};
use crate::config::Secret;
use crate::credentials::{bearer, constant_time_eq};
use crate::logging::event;
use crate::provider::Provider;
use http::{Method, Response};
use log::Level;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// One admin request, as far as these endpoints care.
pub struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The raw `Authorization` value, if any.
    pub authorization: Option<&'a [u8]>,
    pub peer: Option<SocketAddr>,
}

/// The endpoint a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    List,
    One(&'a str),
    Disable(&'a str),
    Enable(&'a str),
}

impl Endpoint<'_> {
    /// The methods it answers, for `405` and `Allow`.
    fn allow(self) -> &'static str {
        match self {
            Endpoint::List | Endpoint::One(_) => "GET, HEAD",
            Endpoint::Disable(_) | Endpoint::Enable(_) => "POST",
        }
    }

    fn takes(self, m: &Method) -> bool {
        match self {
            Endpoint::List | Endpoint::One(_) => *m == Method::GET || *m == Method::HEAD,
            Endpoint::Disable(_) | Endpoint::Enable(_) => *m == Method::POST,
        }
    }
}

/// Whether `path` belongs to these endpoints at all.
pub fn owns(path: &str) -> bool {
    path == "/providers" || path.starts_with("/providers/")
}

pub fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    if path == "/providers" {
        return Some(Endpoint::List);
    }
    let rest = path.strip_prefix("/providers/")?;
    let (name, action) = match rest.split_once('/') {
        Some((name, action)) => (name, Some(action)),
        None => (rest, None),
    };
    if name.is_empty() {
        return None;
    }
    match action {
        None => Some(Endpoint::One(name)),
        Some("disable") => Some(Endpoint::Disable(name)),
        Some("enable") => Some(Endpoint::Enable(name)),
        Some(_) => None,
    }
}

/// The outcome of checking a state-changing call's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted {
        token: bool,
    },
    /// 401: a token is configured and was missing or wrong.
    Unauthorized(&'static str),
    /// 403: no token is configured and the caller is not on loopback.
    Forbidden,
}

/// With a token configured, the call must present it, wherever it comes
/// from (a sidecar's loopback is shared with the whole pod). Without one,
/// only loopback callers may change state.
pub fn authorize(
    token: Option<&Secret>,
    authorization: Option<&[u8]>,
    peer: Option<IpAddr>,
) -> Access {
    match token {
        Some(t) => match authorization.and_then(bearer) {
            // Constant time: how much of a guess matched stays unknown.
            Some(p) if constant_time_eq(t.expose().as_bytes(), p) => {
                Access::Granted { token: true }
            }
            Some(_) => Access::Unauthorized("wrong admin token"),
            None => Access::Unauthorized("the admin token is required as Authorization: Bearer"),
        },
        None if peer.is_some_and(|ip| ip.to_canonical().is_loopback()) => {
            Access::Granted { token: false }
        }
        None => Access::Forbidden,
    }
}

/// The `ttl_ms` of a disable: `None` for until-enabled. Any other
/// parameter is an error rather than ignored: `?ttl=3600000` silently
/// meaning "forever" is the mistake an operator makes at 3 am.
pub fn parse_ttl(query: Option<&str>) -> Result<Option<Duration>, String> {
    let mut ttl = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "ttl_ms" {
            return Err(format!(
                "unknown parameter {k:?}: the only one is ttl_ms (omit it to disable until enabled)"
            ));
        }
        if ttl.is_some() {
            return Err("ttl_ms given twice".into());
        }
        let ms = v
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms >= 1 && u128::from(*ms) <= MAX_TTL.as_millis())
            .ok_or_else(|| {
                format!(
                    "ttl_ms must be a whole number of milliseconds from 1 to {} (got {v:?})",
                    MAX_TTL.as_millis()
                )
            })?;
        ttl = Some(Duration::from_millis(ms));
    }
    Ok(ttl)
}

/// A provider's entry in `/providers`.
pub fn entry(rt: &Runtime, p: &Provider, now: Instant) -> Value {
    let s = p.health.snapshot(now);
    let wall = |t: Instant| crate::clock::rfc3339(crate::clock::wall(t));
    let routes: Vec<&str> = rt
        .routes
        .iter()
        .filter(|r| r.providers.iter().any(|rp| rp.name() == p.name()))
        .map(|r| r.settings.name.as_str())
        .collect();
    json!({
        "name": p.name(),
        "api": p.settings.api.as_str(),
        "state": s.state.as_str(),
        "disabled": s.disabled.is_some(),
        "disabled_since": s.disabled.map(|d| wall(d.since)),
        "disabled_until": s.disabled.and_then(|d| d.until).map(wall),
        "consecutive_failures": s.consecutive_failures,
        "ejected_until": s.ejected_until.map(wall),
        "last_error_class": s.last_error_class.map(|c| c.as_str()),
        "routes": routes,
    })
}

fn json_response(status: u16, body: &Value) -> Response<Vec<u8>> {
    let mut body = body.to_string().into_bytes();
    body.push(b'\n');
    crate::admin::respond(status, "application/json", body)
}

fn error(status: u16, message: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": message }))
}

fn with_header(mut r: Response<Vec<u8>>, name: &'static str, value: &str) -> Response<Vec<u8>> {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

/// Answer one call to these endpoints.
pub fn handle(app: &App, call: &Call) -> Response<Vec<u8>> {
    let Some(ep) = endpoint(call.path) else {
        return error(
            404,
            "not found: GET /providers, GET /providers/{name}, POST /providers/{name}/disable[?ttl_ms=N], POST /providers/{name}/enable",
        );
    };
    if !ep.takes(call.method) {
        let r = error(
            405,
            &format!(
                "{} {} is not allowed: use {}",
                call.method,
                call.path,
                ep.allow()
            ),
        );
        return with_header(r, "allow", ep.allow());
    }
    let rt = app.runtime();
    let now = Instant::now();
    let unknown = |name: &str| {
        let known: Vec<&str> = rt.providers.iter().map(|p| p.name()).collect();
        error(
            404,
            &format!("unknown provider {name:?}; known: {}", known.join(", ")),
        )
    };
    match ep {
        Endpoint::List => {
            let list: Vec<Value> = rt.providers.iter().map(|p| entry(&rt, p, now)).collect();
            json_response(200, &json!({ "providers": list }))
        }
        Endpoint::One(name) => match super::find(&rt, name) {
            Some(p) => json_response(200, &entry(&rt, &p, now)),
            None => unknown(name),
        },
        Endpoint::Disable(name) | Endpoint::Enable(name) => {
            let peer = call
                .peer
                .map_or_else(|| "unknown".to_string(), |a| a.to_string());
            let token = rt.config.admin_token.as_ref();
            let who = match authorize(token, call.authorization, call.peer.map(|a| a.ip())) {
                Access::Granted { token } => Who { peer, token },
                refused => return refuse(refused, &peer, call),
            };
            let ttl = match ep {
                Endpoint::Disable(_) => match parse_ttl(call.query) {
                    Ok(ttl) => ttl,
                    Err(e) => return error(400, &e),
                },
                _ if call.query.is_some_and(|q| !q.is_empty()) => {
                    return error(400, "enable takes no parameters")
                }
                _ => None,
            };
            let Some(p) = super::find(&rt, name) else {
                return unknown(name);
            };
            let changed = match ep {
                Endpoint::Disable(_) => {
                    super::disable(app, &p, ttl, &who);
                    true
                }
                _ => super::enable(app, &p, &who).is_some(),
            };
            let now = Instant::now();
            json_response(
                200,
                &json!({ "provider": entry(&rt, &p, now), "changed": changed }),
            )
        }
    }
}

fn refuse(access: Access, peer: &str, call: &Call) -> Response<Vec<u8>> {
    let (status, reason) = match access {
        Access::Unauthorized(why) => (401, why),
        _ => (
            403,
            "state-changing admin calls are taken from loopback only; set admin.token_env to allow them with a token",
        ),
    };
    event(Level::Warn, "admin_denied")
        .field("peer", peer)
        .field("method", call.method.as_str())
        .field("path", call.path)
        .field("status", status)
        .field("reason", reason)
        .emit();
    let r = error(status, reason);
    if status == 401 {
        return with_header(r, "www-authenticate", "Bearer realm=\"steadfast-admin\"");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_endpoints() {
        assert_eq!(endpoint("/providers"), Some(Endpoint::List));
        assert_eq!(endpoint("/providers/p1"), Some(Endpoint::One("p1")));
        assert_eq!(
            endpoint("/providers/p1/disable"),
            Some(Endpoint::Disable("p1"))
        );
        assert_eq!(
            endpoint("/providers/p1/enable"),
            Some(Endpoint::Enable("p1"))
        );
        for bad in [
            "/providers/",
            "/providers//disable",
            "/providers/p1/",
            "/providers/p1/delete",
            "/providers/p1/disable/x",
            "/providersx",
        ] {
            assert_eq!(endpoint(bad), None, "{bad}");
        }
        assert!(owns("/providers") && owns("/providers/x/y") && !owns("/providersx"));
    }

    #[test]
    fn ttl_is_whole_milliseconds_and_nothing_else() {
        assert_eq!(parse_ttl(None), Ok(None));
        assert_eq!(parse_ttl(Some("")), Ok(None));
        assert_eq!(
            parse_ttl(Some("ttl_ms=3600000")),
            Ok(Some(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse_ttl(Some("ttl_ms=1")),
            Ok(Some(Duration::from_millis(1)))
        );
        let max = MAX_TTL.as_millis().to_string();
        assert_eq!(parse_ttl(Some(&format!("ttl_ms={max}"))), Ok(Some(MAX_TTL)));
        for bad in [
            "ttl_ms=0",
            "ttl_ms=",
            "ttl_ms",
            "ttl_ms=-5",
            "ttl_ms=1.5",
            "ttl_ms=1h",
            "ttl_ms=99999999999999999999999",
            "ttl_ms=1&ttl_ms=2",
            "ttl=3600000",
            "ttl_ms=5&reason=x",
        ] {
            assert!(parse_ttl(Some(bad)).is_err(), "{bad}");
        }
        let too_long = (MAX_TTL.as_millis() + 1).to_string();
        assert!(parse_ttl(Some(&format!("ttl_ms={too_long}"))).is_err());
    }

    #[test]
    fn a_token_is_required_when_set_else_loopback_only() {
        let t = Secret::new("0123456789abcdef".into());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let far: IpAddr = "10.0.0.7".parse().unwrap();
        // No token configured.
        for ip in [lo, lo6, mapped] {
            assert_eq!(
                authorize(None, None, Some(ip)),
                Access::Granted { token: false },
                "{ip}"
            );
        }
        assert_eq!(authorize(None, None, Some(far)), Access::Forbidden);
        assert_eq!(authorize(None, None, None), Access::Forbidden);
        // A bearer sent anyway does not open remote access.
        let good = b"Bearer 0123456789abcdef".as_slice();
        assert_eq!(authorize(None, Some(good), Some(far)), Access::Forbidden);
        // Token configured: needed from anywhere, loopback included.
        assert_eq!(
            authorize(Some(&t), Some(good), Some(far)),
            Access::Granted { token: true }
        );
        assert_eq!(
            authorize(Some(&t), Some(b"bearer   0123456789abcdef"), Some(lo)),
            Access::Granted { token: true }
        );
        for bad in [
            None,
            Some(b"Bearer 0123456789abcdeX".as_slice()),
            Some(b"Bearer 0123456789abcde"),
            Some(b"Basic 0123456789abcdef"),
            Some(b"0123456789abcdef"),
        ] {
            assert!(
                matches!(authorize(Some(&t), bad, Some(lo)), Access::Unauthorized(_)),
                "{bad:?}"
            );
        }
    }
}
