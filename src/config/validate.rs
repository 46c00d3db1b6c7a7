//! Semantic validation: turns a parsed [`FileConfig`] into a typed
//! [`Config`], collecting every problem as `path.to.key: reason`.

use super::schema::{FileConfig, ProviderConf, TimeoutOverrides, Timeouts};
use super::*;
use crate::outcome::{ClassSet, ErrorClass};
use std::collections::HashSet;

/// How config reads environment variables (keys, client tokens); a closure
/// so tests do not have to mutate the process environment.
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigError::new(path, reason));
    }
}

pub fn validate(
    f: &FileConfig,
    source: ConfigSource,
    env: &EnvLookup,
) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Errors(Vec::new());

    let listen_proxy = socket_addr(&mut errs, "listen.proxy", &f.listen.proxy);
    let listen_admin = socket_addr(&mut errs, "listen.admin", &f.listen.admin);
    if let (Some(p), Some(a)) = (listen_proxy, listen_admin) {
        if p == a {
            errs.push("listen.admin", "must differ from listen.proxy");
        }
    }

    let s = &f.server;
    if s.threads == 0 {
        errs.push("server.threads", "must be at least 1");
    }
    if s.pid_file.is_empty() {
        errs.push("server.pid_file", "must not be empty");
    }
    if s.upgrade_sock.is_empty() {
        errs.push("server.upgrade_sock", "must not be empty");
    }

    let l = &f.limits;
    if l.max_inflight == 0 {
        errs.push("limits.max_inflight", "must be at least 1");
    }
    if l.max_body_bytes == 0 {
        errs.push("limits.max_body_bytes", "must be at least 1");
    }
    let max_body_bytes = usize::try_from(l.max_body_bytes).unwrap_or(usize::MAX);

    check_timeouts(&mut errs, "timeouts", &f.timeouts);

    if f.retry.max_attempts == 0 {
        errs.push("retry.max_attempts", "must be at least 1");
    }
    let mut failover_on = ClassSet::empty();
    for (i, name) in f.retry.failover_on.iter().enumerate() {
        match ErrorClass::parse(name).filter(|c| ErrorClass::UPSTREAM.contains(c)) {
            Some(c) => failover_on.insert(c),
            None => errs.push(
                format!("retry.failover_on[{i}]"),
                format!(
                    "unknown class {name:?}; expected one of network, timeout, rate_limit, server, auth, request"
                ),
            ),
        }
    }

    let h = &f.health;
    if h.eject_after_failures == 0 {
        errs.push("health.eject_after_failures", "must be at least 1");
    }
    if h.base_ejection_ms == 0 {
        errs.push("health.base_ejection_ms", "must be at least 1");
    }
    if h.max_ejection_ms < h.base_ejection_ms {
        errs.push(
            "health.max_ejection_ms",
            "must be at least health.base_ejection_ms",
        );
    }
    if h.recovery_probe_interval_ms == 0 {
        errs.push("health.recovery_probe_interval_ms", "must be at least 1");
    }
    if let Some(a) = &h.active {
        if a.interval_ms == 0 {
            errs.push("health.active.interval_ms", "must be at least 1");
        }
        if a.timeout_ms == 0 {
            errs.push("health.active.timeout_ms", "must be at least 1");
        }
    }
    let active = h.active.as_ref().map(|a| ActiveSettings {
        interval: ms(a.interval_ms),
        timeout: ms(a.timeout_ms),
    });

    let mut providers = Vec::new();
    let mut names = HashSet::new();
    if f.providers.is_empty() {
        errs.push("providers", "at least one provider is required");
    }
    for (i, p) in f.providers.iter().enumerate() {
        let path = format!("providers[{i}]");
        if !names.insert(p.name.as_str()) && !p.name.is_empty() {
            errs.push(
                format!("{path}.name"),
                format!("duplicate provider name {:?}", p.name),
            );
        }
        if let Some(ps) = provider(&mut errs, &path, p, &f.timeouts, active, env) {
            providers.push(ps);
        }
    }

    let mut routes = Vec::new();
    let mut route_names = HashSet::new();
    if f.routes.is_empty() {
        errs.push("routes", "at least one route is required");
    }
    for (i, r) in f.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if r.name.is_empty() {
            errs.push(format!("{path}.name"), "is required");
        } else if !route_names.insert(r.name.as_str()) {
            errs.push(
                format!("{path}.name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
        if r.paths.is_empty() {
            errs.push(format!("{path}.paths"), "at least one path is required");
        }
        for (j, p) in r.paths.iter().enumerate() {
            if !p.starts_with('/') {
                errs.push(format!("{path}.paths[{j}]"), "must start with '/'");
            }
        }
        let strategy = match r.strategy.as_deref() {
            None | Some("priority") => Strategy::Priority,
            Some("round_robin") => Strategy::RoundRobin,
            Some("weighted") => Strategy::Weighted,
            Some("least_latency") => Strategy::LeastLatency,
            Some(other) => {
                errs.push(
                    format!("{path}.strategy"),
                    format!("unknown strategy {other:?}; expected priority, round_robin, weighted or least_latency"),
                );
                Strategy::Priority
            }
        };
        if r.providers.is_empty() {
            errs.push(
                format!("{path}.providers"),
                "at least one provider is required",
            );
        }
        let mut idxs = Vec::new();
        let mut seen = HashSet::new();
        for (j, name) in r.providers.iter().enumerate() {
            if !seen.insert(name.as_str()) {
                errs.push(
                    format!("{path}.providers[{j}]"),
                    format!("provider {name:?} is listed twice"),
                );
                continue;
            }
            match providers
                .iter()
                .position(|p: &ProviderSettings| &p.name == name)
            {
                Some(idx) => idxs.push(idx),
                None if f.providers.iter().any(|p| &p.name == name) => {} // invalid provider, already reported
                None => errs.push(
                    format!("{path}.providers[{j}]"),
                    format!("unknown provider {name:?}"),
                ),
            }
        }
        let apis: HashSet<Api> = idxs.iter().map(|&i| providers[i].api).collect();
        if apis.len() > 1 {
            errs.push(
                format!("{path}.providers"),
                "mixes anthropic and openai providers; requests are forwarded unchanged, so every provider of a route must speak the same api",
            );
        }
        if let Some(&first) = idxs.first() {
            routes.push(RouteSettings {
                name: r.name.clone(),
                paths: r.paths.clone(),
                strategy,
                api: providers[first].api,
                providers: idxs,
            });
        }
    }

    let client_tokens = match &f.client_auth {
        None => None,
        Some(ca) => {
            if ca.tokens_env.is_empty() {
                errs.push("client_auth.tokens_env", "is required");
                None
            } else {
                let tokens: Vec<Secret> = env(&ca.tokens_env)
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| Secret::new(t.to_string()))
                    .collect();
                if tokens.is_empty() {
                    // Failing closed: an auth section with no tokens must not
                    // quietly become "no auth".
                    errs.push(
                        "client_auth.tokens_env",
                        format!(
                            "environment variable {} is not set or holds no tokens",
                            ca.tokens_env
                        ),
                    );
                }
                Some(tokens)
            }
        }
    };

    let format = match f.logging.format.as_str() {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            errs.push(
                "logging.format",
                format!("unknown format {other:?}; expected json or text"),
            );
            LogFormat::Json
        }
    };
    let access_log = match f.logging.access_log.as_str() {
        "all" => AccessLog::All,
        "errors_and_slow" => AccessLog::ErrorsAndSlow,
        "off" => AccessLog::Off,
        other => {
            errs.push(
                "logging.access_log",
                format!("unknown mode {other:?}; expected all, errors_and_slow or off"),
            );
            AccessLog::ErrorsAndSlow
        }
    };

    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    // Both addresses parsed, otherwise errs would not be empty.
    let (Some(listen_proxy), Some(listen_admin)) = (listen_proxy, listen_admin) else {
        return Err(vec![ConfigError::new("listen", "invalid address")]);
    };
    Ok(Config {
        source,
        listen_proxy,
        listen_admin,
        server: ServerSettings {
            threads: s.threads,
            pid_file: s.pid_file.clone(),
            upgrade_sock: s.upgrade_sock.clone(),
            drain_delay: ms(s.drain_delay_ms),
            shutdown_timeout: ms(s.shutdown_timeout_ms),
        },
        limits: LimitSettings {
            max_inflight: l.max_inflight,
            queue_timeout: ms(l.queue_timeout_ms),
            max_body_bytes,
        },
        retry: RetrySettings {
            max_attempts: f.retry.max_attempts,
            failover_on,
        },
        health: HealthSettings {
            eject_after_failures: h.eject_after_failures,
            base_ejection: ms(h.base_ejection_ms),
            max_ejection: ms(h.max_ejection_ms),
            max_retry_after: ms(h.max_retry_after_ms),
            recovery_probe_interval: ms(h.recovery_probe_interval_ms),
            active,
        },
        providers,
        routes,
        client_tokens,
        logging: LogSettings {
            format,
            access_log,
            slow: ms(f.logging.slow_ms),
        },
    })
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn socket_addr(errs: &mut Errors, path: &str, v: &str) -> Option<SocketAddr> {
    match v.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                path,
                format!("{v:?} is not an IP:port address (e.g. \"127.0.0.1:8787\")"),
            );
            None
        }
    }
}

fn check_timeouts(errs: &mut Errors, path: &str, t: &Timeouts) {
    for (k, v) in [
        ("connect_ms", t.connect_ms),
        ("response_header_ms", t.response_header_ms),
        ("stream_idle_ms", t.stream_idle_ms),
        ("total_ms", t.total_ms),
    ] {
        if v == 0 {
            errs.push(format!("{path}.{k}"), "must be at least 1");
        }
    }
}

fn check_overrides(errs: &mut Errors, path: &str, t: &TimeoutOverrides) {
    for (k, v) in [
        ("connect_ms", t.connect_ms),
        ("response_header_ms", t.response_header_ms),
        ("stream_idle_ms", t.stream_idle_ms),
        ("total_ms", t.total_ms),
    ] {
        if v == Some(0) {
            errs.push(format!("{path}.{k}"), "must be at least 1");
        }
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_env_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn provider(
    errs: &mut Errors,
    path: &str,
    p: &ProviderConf,
    global: &Timeouts,
    active: Option<ActiveSettings>,
    env: &EnvLookup,
) -> Option<ProviderSettings> {
    let before = errs.0.len();
    if !valid_name(&p.name) {
        errs.push(
            format!("{path}.name"),
            format!("{:?} is not a valid name: use [a-z0-9_-]+", p.name),
        );
    }
    let api = match p.api.as_str() {
        "anthropic" => Some(Api::Anthropic),
        "openai" => Some(Api::OpenAi),
        "" => {
            errs.push(format!("{path}.api"), "is required: anthropic or openai");
            None
        }
        other => {
            errs.push(
                format!("{path}.api"),
                format!("unknown api {other:?}; expected anthropic or openai"),
            );
            None
        }
    };
    let upstream = match parse_base_url(&p.base_url) {
        Ok(u) => Some(u),
        Err(reason) => {
            errs.push(format!("{path}.base_url"), reason);
            None
        }
    };
    let key = match &p.api_key_env {
        None => None,
        Some(var) if !valid_env_name(var) => {
            errs.push(
                format!("{path}.api_key_env"),
                format!("{var:?} is not a valid environment variable name"),
            );
            None
        }
        Some(var) => match env(var).filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(Secret::new(v.trim().to_string())),
            None => {
                errs.push(
                    format!("{path}.api_key_env"),
                    format!("environment variable {var} is not set (omit api_key_env to pass the client's key through)"),
                );
                None
            }
        },
    };
    if p.weight == 0 {
        errs.push(format!("{path}.weight"), "must be at least 1");
    }
    if p.max_inflight == Some(0) {
        errs.push(format!("{path}.max_inflight"), "must be at least 1");
    }
    for (from, to) in &p.models {
        if from.is_empty() || to.is_empty() {
            errs.push(format!("{path}.models"), "model names must not be empty");
        }
    }
    check_overrides(errs, &format!("{path}.timeouts"), &p.timeouts);
    let health_check = match &p.health_check {
        None => None,
        Some(hc) => {
            if !hc.path.starts_with('/') {
                errs.push(format!("{path}.health_check.path"), "must start with '/'");
            }
            if hc.interval_ms == Some(0) {
                errs.push(
                    format!("{path}.health_check.interval_ms"),
                    "must be at least 1",
                );
            }
            if hc.timeout_ms == Some(0) {
                errs.push(
                    format!("{path}.health_check.timeout_ms"),
                    "must be at least 1",
                );
            }
            let defaults = active.unwrap_or(ActiveSettings {
                interval: ms(10_000),
                timeout: ms(3000),
            });
            Some(ProbeSettings {
                path: hc.path.clone(),
                interval: hc.interval_ms.map(ms).unwrap_or(defaults.interval),
                timeout: hc.timeout_ms.map(ms).unwrap_or(defaults.timeout),
            })
        }
    };
    if errs.0.len() != before {
        return None;
    }
    let o = &p.timeouts;
    Some(ProviderSettings {
        name: p.name.clone(),
        api: api?,
        base_url: p.base_url.clone(),
        upstream: upstream?,
        key,
        weight: p.weight,
        max_inflight: p.max_inflight,
        models: p.models.clone(),
        timeouts: TimeoutSettings {
            connect: ms(o.connect_ms.unwrap_or(global.connect_ms)),
            response_header: ms(o.response_header_ms.unwrap_or(global.response_header_ms)),
            stream_idle: ms(o.stream_idle_ms.unwrap_or(global.stream_idle_ms)),
            total: ms(o.total_ms.unwrap_or(global.total_ms)),
        },
        health_check,
    })
}

/// Split `http(s)://host[:port][/prefix]` into its parts.
pub(crate) fn parse_base_url(s: &str) -> Result<UpstreamAddr, String> {
    if s.is_empty() {
        return Err("is required (e.g. \"https://api.anthropic.com\")".into());
    }
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => {
            return Err(format!(
                "scheme {other:?} is not supported; use http or https"
            ))
        }
        None => return Err(format!("{s:?} needs a scheme (http:// or https://)")),
    };
    let auth = uri
        .authority()
        .ok_or_else(|| format!("{s:?} has no host"))?;
    if auth.as_str().contains('@') {
        return Err("must not contain credentials; use api_key_env".into());
    }
    if uri.query().is_some() {
        return Err("must not contain a query string".into());
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path_prefix = uri.path().trim_end_matches('/').to_string();
    Ok(UpstreamAddr {
        tls,
        host: host.to_string(),
        port,
        path_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::super::load::parse_yaml;
    use super::*;

    fn env_with(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<String> + Send + Sync {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn check(yaml: &str) -> Result<Config, Vec<ConfigError>> {
        let f = parse_yaml(yaml).map_err(|e| e.0)?;
        validate(
            &f,
            ConfigSource::Builtin,
            &env_with(&[("KEY_A", "secret-a"), ("TOKENS", "t1, t2")]),
        )
    }

    const GOOD: &str = r#"
providers:
  - name: a
    api: anthropic
    base_url: "https://api.example.com/prefix/"
    api_key_env: KEY_A
    timeouts: { stream_idle_ms: 7 }
  - name: b
    api: anthropic
    base_url: "http://127.0.0.1:9001"
routes:
  - name: messages
    paths: ["/v1/messages"]
    providers: [a, b]
client_auth:
  tokens_env: TOKENS
"#;

    #[test]
    fn good_config_is_typed() {
        let c = check(GOOD).unwrap();
        assert_eq!(c.providers.len(), 2);
        let a = &c.providers[0];
        assert_eq!(a.key.as_ref().unwrap().expose(), "secret-a");
        assert_eq!(a.upstream.host, "api.example.com");
        assert_eq!(a.upstream.port, 443);
        assert!(a.upstream.tls);
        assert_eq!(a.upstream.path_prefix, "/prefix");
        assert_eq!(a.timeouts.stream_idle, ms(7));
        assert_eq!(a.timeouts.connect, ms(5000));
        assert_eq!(c.providers[1].upstream.port, 9001);
        assert_eq!(c.providers[1].upstream.host_header(), "127.0.0.1:9001");
        assert_eq!(c.routes[0].providers, vec![0, 1]);
        assert_eq!(c.routes[0].api, Api::Anthropic);
        assert_eq!(c.client_tokens.as_ref().unwrap().len(), 2);
        assert!(c.retry.fails_over(ErrorClass::RateLimit));
        assert!(!c.retry.fails_over(ErrorClass::Request));
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let c = check(GOOD).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("secret-a"));
        assert!(!dbg.contains("t1"));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let yaml = r#"
listen: { proxy: "nope", admin: "127.0.0.1:9090" }
limits: { max_inflight: 0 }
retry: { failover_on: [network, bogus] }
providers:
  - name: "Bad Name"
    api: grpc
    base_url: "ftp://x"
    api_key_env: MISSING_KEY
  - name: ok
    api: openai
    base_url: "http://127.0.0.1:1"
routes:
  - name: r
    paths: ["v1"]
    strategy: fastest
    providers: [ok, ghost]
logging: { format: xml }
"#;
        let errs = check(yaml).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "listen.proxy",
            "limits.max_inflight",
            "retry.failover_on[1]",
            "providers[0].name",
            "providers[0].api",
            "providers[0].base_url",
            "providers[0].api_key_env",
            "routes[0].paths[0]",
            "routes[0].strategy",
            "routes[0].providers[1]",
            "logging.format",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
        // The error for a missing key names the variable, never a value.
        let e = errs
            .iter()
            .find(|e| e.path == "providers[0].api_key_env")
            .unwrap();
        assert!(e.reason.contains("MISSING_KEY"));
    }

    #[test]
    fn mixed_dialect_route_is_rejected() {
        let yaml = r#"
providers:
  - { name: a, api: anthropic, base_url: "http://127.0.0.1:1" }
  - { name: o, api: openai, base_url: "http://127.0.0.1:2" }
routes:
  - { name: r, paths: ["/v1"], providers: [a, o] }
"#;
        let errs = check(yaml).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "routes[0].providers");
    }

    #[test]
    fn recovery_probe_interval_defaults_to_4s_and_must_be_positive() {
        let base = r#"
providers: [{ name: a, api: anthropic, base_url: "http://127.0.0.1:1" }]
routes: [{ name: r, paths: ["/"], providers: [a] }]
"#;
        let c = check(base).unwrap();
        assert_eq!(c.health.recovery_probe_interval, ms(4000));
        let c = check(&format!(
            "health: {{ recovery_probe_interval_ms: 250 }}{base}"
        ))
        .unwrap();
        assert_eq!(c.health.recovery_probe_interval, ms(250));
        let errs = check(&format!(
            "health: {{ recovery_probe_interval_ms: 0 }}{base}"
        ))
        .unwrap_err();
        assert_eq!(errs[0].path, "health.recovery_probe_interval_ms");
    }

    #[test]
    fn client_auth_without_tokens_fails_closed() {
        let yaml = r#"
providers: [{ name: a, api: anthropic, base_url: "http://127.0.0.1:1" }]
routes: [{ name: r, paths: ["/"], providers: [a] }]
client_auth: { tokens_env: UNSET_TOKENS }
"#;
        let errs = check(yaml).unwrap_err();
        assert_eq!(errs[0].path, "client_auth.tokens_env");
    }

    #[test]
    fn builtin_default_is_valid() {
        let c = validate(&builtin_default(), ConfigSource::Builtin, &|_| None).unwrap();
        assert_eq!(c.routes.len(), 2);
        assert!(c.providers.iter().all(|p| p.key.is_none()));
        assert!(c.routes[1].paths.contains(&"/v1/responses".to_string()));
    }

    #[test]
    fn base_url_forms() {
        assert!(parse_base_url("https://user:pw@x.com").is_err());
        assert!(parse_base_url("x.com").is_err());
        assert!(parse_base_url("https://x.com/?a=1").is_err());
        let u = parse_base_url("http://[::1]:8080/api").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.host_header(), "[::1]:8080");
        assert_eq!(u.path_prefix, "/api");
    }
}
