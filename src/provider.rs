//! A provider as the request path uses it: its settings, its current
//! upstream address (resolved off the hot path), its credential header
//! (swapped whole when its key file changes) and its shared health state.

use crate::cloud::auth::Credential;
use crate::config::Secret;
use crate::config::{ProviderSettings, UpstreamAddr};
use crate::health::{ProviderHealth, ProviderState};
use crate::keys::ProviderKey;
use crate::limits::Limiter;
use arc_swap::ArcSwapOption;
use pingora_core::protocols::l4::ext::TcpKeepalive;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// How long an idle upstream connection may wait in the pool. Below the
/// idle timeouts of the big providers' load balancers, so a pooled
/// connection is rarely closed under us.
pub const POOL_IDLE: Duration = Duration::from_secs(50);

pub struct Provider {
    pub settings: ProviderSettings,
    /// `None` until the host has resolved at least once.
    peer: ArcSwapOption<HttpPeer>,
    /// `None`: the client's own key is passed through.
    key: ArcSwapOption<ProviderKey>,
    pub host_header: String,
    pub health: Arc<ProviderHealth>,
    pub limiter: Option<Limiter>,
    /// A cloud provider's credentials (`kind: bedrock|vertex`).
    pub credential: Option<Credential>,
}

impl Provider {
    pub fn new(
        settings: ProviderSettings,
        health: Arc<ProviderHealth>,
        addr: Option<SocketAddr>,
    ) -> Provider {
        // Validation refused any key that would not make a header.
        let key = settings
            .key
            .clone()
            .and_then(|k| ProviderKey::new(settings.api, k))
            .map(Arc::new);
        let limiter = settings.max_inflight.map(Limiter::new);
        let host_header = settings.upstream.host_header();
        let p = Provider {
            peer: ArcSwapOption::empty(),
            key: ArcSwapOption::new(key),
            host_header,
            health,
            limiter,
            settings,
            credential: None,
        };
        if let Some(a) = addr {
            p.set_address(a);
        }
        p
    }

    pub fn with_credential(mut self, credential: Option<Credential>) -> Provider {
        self.credential = credential;
        self
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Whether a stream may be continued here with an assistant prefill:
    /// Anthropic providers unless configured or learned otherwise,
    /// OpenAI-compatible ones only when configured `prefill: true`.
    pub fn takes_prefill(&self) -> bool {
        use std::sync::atomic::Ordering;
        match self.settings.prefill {
            crate::config::Prefill::Yes => true,
            crate::config::Prefill::No => false,
            crate::config::Prefill::Auto => {
                self.settings.api == crate::config::Api::Anthropic
                    && !self.health.prefill_refused.load(Ordering::Relaxed)
            }
        }
    }

    /// The credential header for one attempt or probe: a snapshot, so a
    /// rotation while it is in flight leaves it alone and the next one
    /// carries the new key.
    pub fn key(&self) -> Option<Arc<ProviderKey>> {
        self.key.load_full()
    }

    /// Whether `k` is the key in use.
    pub fn key_is(&self, k: &Secret) -> bool {
        self.key.load().as_ref().is_some_and(|cur| cur.holds(k))
    }

    /// Swap in a rotated key. Only a provider configured with a key is
    /// given one: a passthrough provider never starts injecting one.
    /// Returns whether it was installed.
    pub fn rotate_key(&self, k: Secret) -> bool {
        if self.key.load().is_none() {
            return false;
        }
        match ProviderKey::new(self.settings.api, k) {
            Some(new) => {
                self.key.store(Some(Arc::new(new)));
                true
            }
            None => false,
        }
    }

    /// The state reported in `/health`, `/stats` and metrics: the circuit's,
    /// except that a cloud provider without usable credentials is
    /// `unhealthy` however its circuit looks (it cannot serve, and would
    /// otherwise look healthy until a request found out).
    pub fn state(&self, now: std::time::Instant) -> ProviderState {
        let state = self.health.snapshot(now).state;
        match &self.credential {
            Some(c) if state == ProviderState::Healthy && !c.is_ready() => ProviderState::Unhealthy,
            _ => state,
        }
    }

    pub fn peer(&self) -> Option<Arc<HttpPeer>> {
        self.peer.load_full()
    }

    pub fn address(&self) -> Option<SocketAddr> {
        self.peer().and_then(|p| match p._address {
            pingora_core::protocols::l4::socket::SocketAddr::Inet(a) => Some(a),
            _ => None,
        })
    }

    /// Point the provider at a (new) address; pooled connections to the old
    /// one are simply not reused any more (the pool is keyed by address).
    pub fn set_address(&self, addr: SocketAddr) {
        if self.address() == Some(addr) {
            return;
        }
        self.peer
            .store(Some(Arc::new(build_peer(&self.settings, addr))));
    }
}

fn build_peer(s: &ProviderSettings, addr: SocketAddr) -> HttpPeer {
    let u = &s.upstream;
    let mut peer = HttpPeer::new(addr, u.tls, u.host.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(s.timeouts.connect);
    o.total_connection_timeout = Some(s.timeouts.connect);
    o.idle_timeout = Some(POOL_IDLE);
    o.alpn = ALPN::H1;
    o.tcp_keepalive = Some(TcpKeepalive {
        idle: Duration::from_secs(30),
        interval: Duration::from_secs(10),
        count: 3,
        #[cfg(target_os = "linux")]
        user_timeout: Duration::ZERO,
    });
    o.verify_cert = true;
    o.verify_hostname = true;
    peer
}

/// The address of an IP-literal host, without any lookup.
pub fn literal_address(u: &UpstreamAddr) -> Option<SocketAddr> {
    u.host
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, u.port))
}

/// Blocking DNS lookup; call from startup or a blocking thread only.
pub fn resolve_blocking(u: &UpstreamAddr) -> std::io::Result<SocketAddr> {
    if let Some(a) = literal_address(u) {
        return Ok(a);
    }
    (u.host.as_str(), u.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"))
}
