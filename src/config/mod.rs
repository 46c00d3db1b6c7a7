//! Configuration: the file schema, loading, validation, and the built-in
//! default. The output is a [`Config`] whose values are typed and checked, so
//! nothing downstream has to re-validate or parse strings.

mod default;
#[cfg(test)]
mod doc_coverage;
mod load;
pub mod schema;
mod validate;

pub use default::builtin_default;
pub use load::{load, parse_yaml, read_file_config, resolve_source, ConfigSource};
pub use validate::{validate, EnvLookup};

use crate::outcome::{ClassSet, ErrorClass};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// One problem in a config file, reported as `path.to.key: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Every problem found in one config, so an operator fixes them in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A value that must never be printed: provider keys and client tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An API dialect: what a provider speaks on the wire (its `api`), and
/// what the clients of a route speak ([`RouteSettings::api`]).
///
/// `OpenAi` is OpenAI's family as a passthrough provider knows it (Chat
/// Completions and Responses alike are forwarded unchanged); where a body
/// must be understood, as in translation, it means Chat Completions and
/// `OpenAiResponses` means the Responses API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Anthropic,
    OpenAi,
    OpenAiResponses,
}

impl Api {
    pub const ALL: [Api; 3] = [Api::Anthropic, Api::OpenAi, Api::OpenAiResponses];

    /// The `api` value in the config file, and the `from_api` / `to_api`
    /// label of `steadfast_translations_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Anthropic => "anthropic",
            Api::OpenAi => "openai",
            Api::OpenAiResponses => "openai_responses",
        }
    }

    pub fn parse(s: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether errors, credentials and stream events take OpenAI's shape.
    pub fn is_openai(self) -> bool {
        matches!(self, Api::OpenAi | Api::OpenAiResponses)
    }

    /// The path of this dialect's generation endpoint: where a
    /// translated attempt goes, after the provider's base_url prefix.
    pub fn endpoint(self) -> &'static str {
        match self {
            Api::Anthropic => "/v1/messages",
            Api::OpenAi => "/v1/chat/completions",
            Api::OpenAiResponses => "/v1/responses",
        }
    }

    /// The dialect whose endpoint `path` names: the endpoint itself, or a
    /// path ending in it on a segment boundary (`/anthropic/v1/messages`).
    pub fn of_endpoint(path: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| {
            path.strip_suffix(a.endpoint())
                .is_some_and(|head| head.is_empty() || !head.ends_with('/'))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Priority,
    RoundRobin,
    Weighted,
    LeastLatency,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::RoundRobin => "round_robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least_latency",
        }
    }
}

/// `routes[].affinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Affinity {
    /// Every request is ordered by the strategy alone.
    #[default]
    Off,
    /// A session's requests go to the provider its key hashes to while
    /// that provider is available ([`crate::affinity`]).
    Session,
}

impl Affinity {
    pub fn as_str(self) -> &'static str {
        match self {
            Affinity::Off => "off",
            Affinity::Session => "session",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    All,
    ErrorsAndSlow,
    Off,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: ConfigSource,
    pub listen_proxy: SocketAddr,
    pub listen_admin: SocketAddr,
    pub server: ServerSettings,
    pub limits: LimitSettings,
    pub retry: RetrySettings,
    pub health: HealthSettings,
    pub providers: Vec<ProviderSettings>,
    pub routes: Vec<RouteSettings>,
    pub client_tokens: Option<Vec<Secret>>,
    /// `admin.token_env`'s value: the bearer token state-changing admin
    /// calls need (`None`: loopback only).
    pub admin_token: Option<Secret>,
    pub logging: LogSettings,
    /// `None`: tracing is off (no `telemetry.otlp_endpoint`).
    pub telemetry: Option<TelemetrySettings>,
}

impl Config {
    pub fn provider(&self, name: &str) -> Option<&ProviderSettings> {
        self.providers.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub threads: usize,
    pub work_stealing: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub drain_delay: Duration,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    pub max_inflight: usize,
    pub queue_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub failover_on: ClassSet,
    pub resume_streams: bool,
}

impl RetrySettings {
    pub fn fails_over(&self, class: ErrorClass) -> bool {
        self.failover_on.contains(class)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub eject_after_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_retry_after: Duration,
    pub recovery_probe_interval: Duration,
    pub active: Option<ActiveSettings>,
}

impl HealthSettings {
    /// How long a probe may take when its provider sets no `timeout_ms`.
    pub fn probe_timeout(&self) -> Duration {
        self.active.map_or(
            Duration::from_millis(schema::ActiveHealth::default().timeout_ms),
            |a| a.timeout,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActiveSettings {
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeoutSettings {
    pub connect: Duration,
    /// Non-streaming requests: request sent to response header.
    pub response_header: Duration,
    /// Streaming requests: request sent to response header.
    pub response_header_stream: Duration,
    /// A 2xx stream: response header to its first content-bearing event.
    pub first_content: Duration,
    pub stream_idle: Duration,
    pub total: Duration,
}

/// Where a provider lives, split out of its `base_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix from `base_url` without a trailing slash ("" for none);
    /// prepended to the client's path.
    pub path_prefix: String,
}

impl UpstreamAddr {
    /// The `Host` header value: the port is left out when it is the default.
    pub fn host_header(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Where a provider's API is hosted, and so how requests to it are
/// addressed and authenticated (`kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// The provider's own API at `base_url`, with `api_key_env` or the
    /// client's key.
    Direct,
    /// Claude on AWS Bedrock (InvokeModel), SigV4-signed with credentials
    /// from the AWS chain.
    Bedrock { region: String },
    /// Claude on Google Vertex AI (rawPredict), with OAuth2 tokens from
    /// Application Default Credentials.
    Vertex { region: String, project: String },
}

impl ProviderKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::Direct => "direct",
            ProviderKind::Bedrock { .. } => "bedrock",
            ProviderKind::Vertex { .. } => "vertex",
        }
    }

    /// Whether requests go to a cloud's own API rather than the provider's.
    pub fn is_cloud(&self) -> bool {
        !matches!(self, ProviderKind::Direct)
    }
}

/// A provider's `anthropic_beta` filter: flags in `deny` are never sent;
/// when `allow` is not empty, only the flags in it are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BetaFilter {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    pub name: String,
    pub api: Api,
    pub kind: ProviderKind,
    pub base_url: String,
    pub upstream: UpstreamAddr,
    /// The key at load time, from `api_key_env` or `api_key_file`.
    pub key: Option<Secret>,
    /// `api_key_file`: where rotated keys are read from.
    pub key_file: Option<std::path::PathBuf>,
    pub weight: u32,
    pub max_inflight: Option<usize>,
    pub models: BTreeMap<String, String>,
    pub timeouts: TimeoutSettings,
    pub health_check: Option<ProbeSettings>,
    pub anthropic_beta: BetaFilter,
    pub prefill: Prefill,
}

/// Whether a provider takes an assistant prefill (`providers[].prefill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefill {
    /// Anthropic providers: yes until a 400 says no (then never again in
    /// this process). OpenAI-compatible providers: no.
    Auto,
    Yes,
    No,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    pub name: String,
    pub paths: Vec<String>,
    pub strategy: Strategy,
    /// Indexes into [`Config::providers`], in configured order.
    pub providers: Vec<usize>,
    /// The clients' dialect: that of errors steadfast itself produces on
    /// this route, and what a translated attempt translates from. Without
    /// `translate` it is the dialect of the route's first provider (they all
    /// speak it); with it, the dialect named by the route's paths.
    pub api: Api,
    /// `translate: true`: providers of another `api` may serve this route,
    /// their requests and responses translated (see `crate::translate`).
    pub translate: bool,
    pub affinity: Affinity,
}

/// OpenTelemetry tracing, on (`telemetry.otlp_endpoint` set). Applied at
/// start: the exporter is a process-wide service.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// `http://host:port`, checked.
    pub otlp_endpoint: String,
    pub sample_ratio: f64,
    pub max_queued_spans: usize,
    pub export_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub access_log: AccessLog,
    pub slow: Duration,
}
