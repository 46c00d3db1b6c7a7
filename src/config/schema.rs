//! The YAML file as written by the operator. Every section has
//! defaults so a file only needs the keys it changes. Unknown keys are not
//! rejected here but collected by the loader, so that every one of them can be
//! reported with its path instead of only the first.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct FileConfig {
    pub listen: Listen,
    pub server: ServerSection,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub retry: Retry,
    pub health: Health,
    pub providers: Vec<ProviderConf>,
    pub routes: Vec<RouteConf>,
    pub client_auth: Option<ClientAuth>,
    pub admin: AdminConf,
    pub logging: Logging,
    pub telemetry: Telemetry,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Listen {
    pub proxy: String,
    pub admin: String,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            proxy: "127.0.0.1:8787".into(),
            admin: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ServerSection {
    pub threads: usize,
    /// Pingora's work stealing between the proxy's threads; off, each
    /// thread runs its own connections start to end.
    pub work_stealing: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub drain_delay_ms: u64,
    pub shutdown_timeout_ms: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            threads: 2,
            work_stealing: true,
            pid_file: "/tmp/steadfast.pid".into(),
            upgrade_sock: "/tmp/steadfast-upgrade.sock".into(),
            drain_delay_ms: 5000,
            shutdown_timeout_ms: 25000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Limits {
    pub max_inflight: usize,
    pub queue_timeout_ms: u64,
    pub max_body_bytes: u64,
    /// Request line plus header fields of one HTTP/1 request (and the
    /// decoded header list of an h2 request); larger: 431.
    pub max_header_bytes: u64,
    /// From the first byte of a request head to its end; slower: 408.
    pub header_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflight: 100,
            queue_timeout_ms: 5000,
            max_body_bytes: 32 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Timeouts {
    pub connect_ms: u64,
    pub response_header_ms: u64,
    pub response_header_stream_ms: u64,
    pub first_content_ms: u64,
    pub stream_idle_ms: u64,
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 5000,
            // A non-streaming answer arrives whole: a model that thinks for
            // minutes sends nothing until it is done.
            response_header_ms: 600_000,
            response_header_stream_ms: 120_000,
            first_content_ms: 60_000,
            stream_idle_ms: 300_000,
            total_ms: 900_000,
        }
    }
}

/// Per-provider overrides of [`Timeouts`]; absent keys inherit the global value.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct TimeoutOverrides {
    pub connect_ms: Option<u64>,
    pub response_header_ms: Option<u64>,
    pub response_header_stream_ms: Option<u64>,
    pub first_content_ms: Option<u64>,
    pub stream_idle_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Retry {
    pub max_attempts: u32,
    /// Kept as strings so an unknown class is reported with its index by
    /// validation rather than as an opaque serde error.
    pub failover_on: Vec<String>,
    /// Continue a text stream cut mid-answer on the next provider, with the
    /// text delivered so far as an assistant prefill.
    pub resume_streams: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 3,
            failover_on: [
                "network",
                "timeout",
                "rate_limit",
                "server",
                "auth",
                "empty",
                "context_length",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            resume_streams: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Health {
    pub eject_after_failures: u32,
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
    pub max_retry_after_ms: u64,
    /// While a provider is ejected, how often it is probed to catch a
    /// recovery before its ejection ends.
    pub recovery_probe_interval_ms: u64,
    pub active: Option<ActiveHealth>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            eject_after_failures: 3,
            base_ejection_ms: 1000,
            max_ejection_ms: 60_000,
            max_retry_after_ms: 300_000,
            recovery_probe_interval_ms: 4000,
            active: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ActiveHealth {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for ActiveHealth {
    fn default() -> Self {
        ActiveHealth {
            interval_ms: 10_000,
            timeout_ms: 3000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ProviderConf {
    pub name: String,
    pub api: String,
    /// `direct` (the default), `bedrock` or `vertex`.
    pub kind: Option<String>,
    /// Cloud region of a `bedrock` or `vertex` provider.
    pub region: Option<String>,
    /// Google Cloud project of a `vertex` provider.
    pub project: Option<String>,
    /// Optional for `bedrock` and `vertex`, whose endpoint follows from
    /// the region.
    pub base_url: String,
    pub api_key_env: Option<String>,
    /// A file holding the key, re-read when it changes (key rotation).
    pub api_key_file: Option<String>,
    pub weight: u32,
    pub max_inflight: Option<usize>,
    pub models: BTreeMap<String, String>,
    pub timeouts: TimeoutOverrides,
    pub health_check: Option<HealthCheckConf>,
    pub anthropic_beta: Option<BetaFilterConf>,
    /// `auto` (learned from a rejecting 400), `true` or `false`: whether
    /// the provider takes an assistant prefill (stream resumption).
    pub prefill: Option<String>,
}

impl Default for ProviderConf {
    fn default() -> Self {
        ProviderConf {
            name: String::new(),
            api: String::new(),
            kind: None,
            region: None,
            project: None,
            base_url: String::new(),
            api_key_env: None,
            api_key_file: None,
            weight: 1,
            max_inflight: None,
            models: BTreeMap::new(),
            timeouts: TimeoutOverrides::default(),
            health_check: None,
            anthropic_beta: None,
            prefill: None,
        }
    }
}

/// Which `anthropic-beta` flags a provider is sent: with `allow` non-empty
/// only those, and never one in `deny`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct BetaFilterConf {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HealthCheckConf {
    pub path: String,
    /// Overrides `health.active.interval_ms` for this provider.
    pub interval_ms: Option<u64>,
    /// Overrides `health.active.timeout_ms` for this provider.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RouteConf {
    pub name: String,
    pub paths: Vec<String>,
    pub strategy: Option<String>,
    pub providers: Vec<String>,
    /// Allow providers of another `api` (cross-dialect failover).
    pub translate: bool,
    /// `off` (default) or `session`; a string so that a typo is reported
    /// with its path by validation.
    pub affinity: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ClientAuth {
    pub tokens_env: String,
}

/// The admin listener's control API.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct AdminConf {
    /// Names the variable holding the bearer token that state-changing
    /// admin calls need; without it they are taken from loopback only.
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Logging {
    pub format: String,
    pub access_log: String,
    pub slow_ms: u64,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            format: "json".into(),
            access_log: "errors_and_slow".into(),
            slow_ms: 1000,
        }
    }
}

/// OpenTelemetry traces (`telemetry`); off without an endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Telemetry {
    /// OTLP/gRPC receiver, `http://host:port` (a collector's 4317).
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded; a client's sampled flag decides for
    /// the traces it continues.
    pub sample_ratio: f64,
    /// Spans waiting for export at most; more are dropped and counted.
    pub max_queued_spans: usize,
    /// How long one export may take before its spans count as lost.
    pub export_timeout_ms: u64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            max_queued_spans: 4096,
            export_timeout_ms: 10_000,
        }
    }
}
