//! Process-wide state: the current config snapshot (swapped atomically on
//! reload), the upstream connector, provider health (and operators'
//! disables) that outlive reloads, and the lifecycle flags the admin
//! endpoints report.

use crate::config::{Config, RouteSettings};
use crate::health::{Policy, ProviderHealth};
use crate::limits::Limiter;
use crate::provider::{literal_address, Provider};
use crate::routing::Selector;
use arc_swap::ArcSwap;
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One route, ready for the request path.
pub struct Route {
    pub settings: RouteSettings,
    pub providers: Vec<Arc<Provider>>,
    pub selector: Selector,
    /// Whether any provider rewrites `model`, i.e. whether the body must be
    /// looked at all.
    pub rewrites_models: bool,
}

/// Everything derived from one config. Immutable; a request keeps the
/// snapshot it started with for its whole life, so a reload never changes a
/// request in flight.
pub struct Runtime {
    pub config: Arc<Config>,
    pub providers: Vec<Arc<Provider>>,
    pub routes: Vec<Route>,
    pub limiter: Limiter,
    pub policy: Policy,
    pub generation: u64,
}

impl Runtime {
    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| crate::routing::matches(&r.settings.paths, path))
    }
}

pub struct App {
    runtime: ArcSwap<Runtime>,
    pub transport: TransportConnector,
    health: Mutex<HashMap<String, Arc<ProviderHealth>>>,
    generation: AtomicU64,
    pub started: Instant,
    pub draining: AtomicBool,
    pub ready: AtomicBool,
    /// Operator control of providers: the state file and its writer.
    pub control: crate::control::Control,
    /// Bedrock and Vertex credentials, kept across reloads (see
    /// [`crate::cloud::service`]).
    pub cloud: crate::cloud::auth::CloudAuth,
}

impl App {
    /// Build the app from a validated config. `addrs` holds the resolved
    /// address of each provider (by index), `None` when resolution failed:
    /// such a provider fails its attempts as `network` until the resolver
    /// succeeds.
    pub fn new(config: Config, addrs: &[Option<SocketAddr>]) -> Arc<App> {
        let mut opts = ConnectorOptions::new(256);
        opts.keepalive_pool_size = 256 * config.server.threads.max(1);
        let health = Mutex::new(HashMap::new());
        let app = App {
            runtime: ArcSwap::from_pointee(Runtime {
                config: Arc::new(config.clone()),
                providers: Vec::new(),
                routes: Vec::new(),
                limiter: Limiter::new(config.limits.max_inflight),
                policy: Policy::from_settings(&config.health),
                generation: 0,
            }),
            transport: TransportConnector::new(Some(opts)),
            health,
            generation: AtomicU64::new(0),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            control: crate::control::Control::new(&config.server.pid_file),
            cloud: crate::cloud::auth::CloudAuth::new(),
        };
        let rt = app.build_runtime(config, addrs, None);
        app.runtime.store(Arc::new(rt));
        Arc::new(app)
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swap in a new config. Providers keep their health by name; the global
    /// limiter is kept when its size did not change, so requests in flight
    /// still count against it.
    pub fn install(&self, config: Config, addrs: &[Option<SocketAddr>]) -> Arc<Runtime> {
        let old = self.runtime();
        let rt = Arc::new(self.build_runtime(config, addrs, Some(&old)));
        self.runtime.store(rt.clone());
        self.cloud.config_changed();
        rt
    }

    fn build_runtime(
        &self,
        config: Config,
        addrs: &[Option<SocketAddr>],
        old: Option<&Runtime>,
    ) -> Runtime {
        let mut registry = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let providers: Vec<Arc<Provider>> = config
            .providers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let health = registry.entry(s.name.clone()).or_default().clone();
                // Keep the address we already know when the new config did
                // not resolve one (same host) so a reload never loses it.
                let known = old.and_then(|o| {
                    o.providers
                        .iter()
                        .find(|p| p.settings.upstream == s.upstream)
                        .and_then(|p| p.address())
                });
                let addr = addrs
                    .get(i)
                    .copied()
                    .flatten()
                    .or(known)
                    .or_else(|| literal_address(&s.upstream));
                Arc::new(
                    Provider::new(s.clone(), health, addr)
                        .with_credential(self.cloud.for_kind(&s.kind)),
                )
            })
            .collect();
        registry.retain(|name, _| config.providers.iter().any(|p| &p.name == name));
        drop(registry);
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let ps: Vec<Arc<Provider>> =
                    r.providers.iter().map(|&i| providers[i].clone()).collect();
                let mut selector = Selector::new(r.strategy, ps.len());
                if r.affinity == crate::config::Affinity::Session {
                    selector = selector.with_affinity(ps.iter().map(|p| p.name()));
                }
                Route {
                    rewrites_models: ps.iter().any(|p| !p.settings.models.is_empty()),
                    selector,
                    providers: ps,
                    settings: r.clone(),
                }
            })
            .collect();
        let limiter = match old {
            Some(o) if o.limiter.max() == config.limits.max_inflight => o.limiter.clone(),
            _ => Limiter::new(config.limits.max_inflight),
        };
        Runtime {
            policy: Policy::from_settings(&config.health),
            config: Arc::new(config),
            providers,
            routes,
            limiter,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
