//! Whole-config validation: sections together, cross-references between
//! them, and every error reported in one pass.

use super::super::load::parse_yaml;
use super::*;
use crate::outcome::ErrorClass;

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
fn header_limits_are_typed_and_bounded() {
    let c = check(GOOD).unwrap();
    assert_eq!(c.limits.max_header_bytes, 65536);
    assert_eq!(c.limits.header_timeout, ms(10_000));
    let c = check(&format!(
        "limits: {{ max_header_bytes: 1024, header_timeout_ms: 250 }}\n{GOOD}"
    ))
    .unwrap();
    assert_eq!(c.limits.max_header_bytes, 1024);
    assert_eq!(c.limits.header_timeout, ms(250));
    assert!(check(&format!("limits: {{ max_header_bytes: 1048576 }}\n{GOOD}")).is_ok());
    for bad in [
        "max_header_bytes: 1023",
        "max_header_bytes: 1048577",
        "header_timeout_ms: 0",
    ] {
        let errs = check(&format!("limits: {{ {bad} }}\n{GOOD}")).unwrap_err();
        let key = bad.split(':').next().unwrap();
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        assert_eq!(errs[0].path, format!("limits.{key}"), "{bad}");
    }
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
fn route_paths_must_be_normalised() {
    let yaml = r#"
providers: [{ name: a, api: anthropic, base_url: "http://127.0.0.1:1" }]
routes:
  - { name: r, paths: ["/", "/v1/", "/v1/messages", "/v1/a%3Ab", "/v1/./x", "/v1/../x", "//v1", "/v1/%6d", "/v1%2fx"], providers: [a] }
"#;
    let errs = check(yaml).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[0].paths[4]",
            "routes[0].paths[5]",
            "routes[0].paths[6]",
            "routes[0].paths[7]",
            "routes[0].paths[8]"
        ]
    );
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
fn health_active_sets_the_probe_defaults_of_every_provider() {
    let yaml = r#"
health: { active: { interval_ms: 250, timeout_ms: 40 } }
providers:
  - { name: a, api: anthropic, base_url: "http://127.0.0.1:1", health_check: { path: /health } }
  - { name: b, api: anthropic, base_url: "http://127.0.0.1:2", health_check: { path: /h, timeout_ms: 9 } }
routes: [{ name: r, paths: ["/"], providers: [a, b] }]
"#;
    let c = check(yaml).unwrap();
    let probe = |i: usize| c.providers[i].health_check.as_ref().unwrap();
    assert_eq!((probe(0).interval, probe(0).timeout), (ms(250), ms(40)));
    assert_eq!((probe(1).interval, probe(1).timeout), (ms(250), ms(9)));
    assert_eq!(c.health.active.map(|a| a.interval), Some(ms(250)));
}

#[test]
fn a_translated_provider_needs_its_own_key() {
    let yaml = r#"
providers:
  - { name: a, api: anthropic, base_url: "http://127.0.0.1:1" }
  - { name: o, api: openai, base_url: "http://127.0.0.1:2" }
routes:
  - { name: m, paths: ["/v1/messages"], translate: true, providers: [a, o] }
"#;
    let errs = check(yaml).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "routes[0].providers[1]");
    assert!(errs[0].reason.contains("key of its own"), "{errs:?}");
}

#[test]
fn translate_lets_a_route_mix_dialects() {
    let yaml = r#"
providers:
  - { name: a, api: anthropic, base_url: "http://127.0.0.1:1", api_key_env: KEY_A }
  - { name: o, api: openai, base_url: "http://127.0.0.1:2/compat", api_key_env: KEY_A }
  - { name: r, api: openai_responses, base_url: "http://127.0.0.1:3", api_key_env: KEY_A }
routes:
  - { name: m, paths: ["/v1/messages"], translate: true, providers: [o, a, r] }
  - { name: c, paths: ["/v1/chat/completions"], translate: true, providers: [a] }
  - { name: plain, paths: ["/v1/responses"], providers: [r] }
"#;
    let c = check(yaml).unwrap();
    assert_eq!(c.providers[2].api, Api::OpenAiResponses);
    assert!(c.routes[0].translate);
    // The clients' dialect comes from the path, not the first provider.
    assert_eq!(c.routes[0].api, Api::Anthropic);
    assert_eq!(c.routes[1].api, Api::OpenAi);
    assert!(!c.routes[2].translate);
    assert_eq!(c.routes[2].api, Api::OpenAiResponses);
    // Without the key, the same mix is the old error.
    let errs = check(&yaml.replacen("translate: true, ", "", 1)).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "routes[0].providers");
    assert!(
        errs[0].reason.contains("translate: true"),
        "{}",
        errs[0].reason
    );
}

#[test]
fn api_values_and_endpoints() {
    for a in Api::ALL {
        assert_eq!(Api::parse(a.as_str()), Some(a));
        assert_eq!(Api::of_endpoint(a.endpoint()), Some(a));
    }
    assert_eq!(Api::parse("openai-responses"), None);
    assert_eq!(
        Api::of_endpoint("/eu/v1/responses"),
        Some(Api::OpenAiResponses)
    );
    assert_eq!(Api::of_endpoint("/v1/messages/count_tokens"), None);
    assert_eq!(Api::of_endpoint("/x/v2/v1/messages"), Some(Api::Anthropic));
    assert_eq!(Api::of_endpoint("/xv1/messages"), None);
    let errs = check(
        "providers: [{ name: a, api: openai_chat, base_url: \"http://127.0.0.1:1\" }]\nroutes: [{ name: r, paths: [\"/\"], providers: [a] }]\n",
    )
    .unwrap_err();
    assert!(
        errs[0].reason.contains("openai_responses"),
        "{}",
        errs[0].reason
    );
}
