//! The admin listener: liveness, readiness, health, metrics and
//! stats, on its own Pingora service so it answers even when the proxy
//! listener is saturated; and the provider control API (see
//! [`crate::control::api`]).

use crate::app::App;
use crate::health::ProviderState;
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub struct Admin {
    app: Arc<App>,
}

pub fn add_service(server: &mut Server, app: Arc<App>, addr: SocketAddr) {
    let mut svc = Service::new("steadfast admin".to_string(), Admin { app });
    svc.add_tcp(&addr.to_string());
    server.add_service(svc);
}

pub(crate) fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let method = req.method.clone();
        if crate::control::api::owns(&path) {
            let query = req.uri.query().map(str::to_string);
            let authorization = req
                .headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
            if method != http::Method::GET && method != http::Method::HEAD {
                // The request body (if any) is not read: the connection is
                // not reused, so it cannot be taken for the next request.
                session.set_keepalive(None);
            }
            let call = crate::control::api::Call {
                method: &method,
                path: &path,
                query: query.as_deref(),
                authorization: authorization.as_deref(),
                peer,
            };
            return crate::control::api::handle(&self.app, &call);
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            session.set_keepalive(None);
            let mut r = text(405, &format!("{method} is not allowed here: use GET\n"));
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return r;
        }
        match path.as_str() {
            "/live" => text(200, "live\n"),
            "/ready" => {
                if self.app.ready.load(Ordering::Relaxed) && !self.app.is_draining() {
                    text(200, "ready\n")
                } else {
                    text(503, "not ready\n")
                }
            }
            "/health" => {
                let (status, body) = health(&self.app);
                respond(status, "application/json", body.to_string().into_bytes())
            }
            "/metrics" => {
                match crate::metrics::global().scrape(&self.app.runtime(), Instant::now()) {
                    Ok(body) => respond(200, crate::metrics::CONTENT_TYPE, body),
                    Err(e) => text(500, &format!("{e}\n")),
                }
            }
            "/stats" => {
                let body = crate::stats::global().render(&self.app.runtime(), Instant::now());
                respond(200, "application/json", body.to_string().into_bytes())
            }
            _ => text(
                404,
                "not found: try /live /ready /health /metrics /stats /providers\n",
            ),
        }
    }
}

/// The `/health` document and its status code.
pub fn health(app: &App) -> (u16, serde_json::Value) {
    let rt = app.runtime();
    let now = Instant::now();
    let providers: Vec<serde_json::Value> = rt
        .providers
        .iter()
        .map(|p| {
            let s = p.health.snapshot(now);
            let mut v = json!({
                "name": p.name(),
                "state": p.state(now).as_str(),
                "consecutive_failures": s.consecutive_failures,
                "ejected_until": s.ejected_until.map(|t| crate::clock::rfc3339(crate::clock::wall(t))),
                "disabled_until": s.disabled.and_then(|d| d.until).map(|t| crate::clock::rfc3339(crate::clock::wall(t))),
                "last_error_class": s.last_error_class.map(|c| c.as_str()),
            });
            if let Some(c) = &p.credential {
                crate::cloud::auth::describe_status(&c.status(), &mut v);
            }
            v
        })
        .collect();
    // A disabled provider is not available: /health is degraded while one
    // is out, and unhealthy when some route has nothing else left. A cloud
    // provider without usable credentials is not available either.
    let available = |i: usize| rt.providers[i].state(now) == ProviderState::Healthy;
    let all_available = (0..rt.providers.len()).all(available);
    let some_route_dead = rt
        .config
        .routes
        .iter()
        .any(|r| !r.providers.iter().any(|&i| available(i)));
    let inflight = crate::gauges::inflight();
    let max = rt.config.limits.max_inflight;
    let status = if app.is_draining() {
        "draining"
    } else if some_route_dead {
        "unhealthy"
    } else if !all_available || inflight * 10 >= max * 9 {
        "degraded"
    } else {
        "healthy"
    };
    let code = if matches!(status, "healthy" | "degraded") {
        200
    } else {
        503
    };
    (
        code,
        json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": app.started.elapsed().as_secs(),
            "inflight": inflight,
            "max_inflight": max,
            "memory_rss_bytes": crate::gauges::rss_bytes(),
            "providers": providers,
        }),
    )
}
