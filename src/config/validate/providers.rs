//! The `providers` list: each provider's name, dialect, upstream address,
//! key, weight, limits, model map, timeouts and active probe. The cloud
//! keys (`kind`, `region`, `project`, `anthropic_beta`) are checked in
//! [`super::cloud`].

use super::cloud;
use super::timeouts::{check_overrides, resolve};
use super::{ms, EnvLookup, Errors};
use crate::config::schema::{ProviderConf, Timeouts};
use crate::config::{
    ActiveSettings, Api, Prefill, ProbeSettings, ProviderSettings, Secret, UpstreamAddr,
};
use crate::keys::{self, KeyProblem};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The valid providers, in file order. An invalid one is reported and left
/// out; `routes` tells a route naming it apart from one naming no provider.
pub(super) fn providers(
    errs: &mut Errors,
    list: &[ProviderConf],
    global: &Timeouts,
    active: Option<ActiveSettings>,
    env: &EnvLookup,
) -> Vec<ProviderSettings> {
    let mut providers = Vec::new();
    let mut names = HashSet::new();
    if list.is_empty() {
        errs.push("providers", "at least one provider is required");
    }
    for (i, p) in list.iter().enumerate() {
        let path = format!("providers[{i}]");
        if !names.insert(p.name.as_str()) && !p.name.is_empty() {
            errs.push(
                format!("{path}.name"),
                format!("duplicate provider name {:?}", p.name),
            );
        }
        if let Some(ps) = provider(errs, &path, p, global, active, env) {
            providers.push(ps);
        }
    }
    providers
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(super) fn valid_env_name(n: &str) -> bool {
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
        "" => {
            errs.push(
                format!("{path}.api"),
                "is required: anthropic, openai or openai_responses",
            );
            None
        }
        other => {
            let api = Api::parse(other);
            if api.is_none() {
                errs.push(
                    format!("{path}.api"),
                    format!(
                        "unknown api {other:?}; expected anthropic, openai or openai_responses"
                    ),
                );
            }
            api
        }
    };
    let kind = cloud::kind(errs, path, p);
    // A cloud provider's endpoint follows from its region unless set (a
    // VPC endpoint, or a fake in tests).
    let base_url = match &kind {
        Some(k) if k.is_cloud() && p.base_url.is_empty() => crate::cloud::default_base_url(k),
        _ => p.base_url.clone(),
    };
    let upstream = match parse_base_url(&base_url) {
        Ok(u) => Some(u),
        // An unknown kind is reported already; it does not need a base_url.
        Err(_) if kind.is_none() && p.base_url.is_empty() && p.kind.is_some() => None,
        Err(reason) => {
            errs.push(format!("{path}.base_url"), reason);
            None
        }
    };
    let cloud_kind = matches!(p.kind.as_deref(), Some("bedrock" | "vertex"));
    let key = match (&p.api_key_env, &p.api_key_file) {
        // Reported by `cloud::kind`: the cloud's own credentials are used.
        (Some(_), _) | (_, Some(_)) if cloud_kind => None,
        (None, None) => None,
        (Some(_), Some(_)) => {
            errs.push(
                format!("{path}.api_key_file"),
                "set either api_key_env or api_key_file, not both",
            );
            None
        }
        (Some(var), None) => key_from_env(errs, path, var, env),
        (None, Some(file)) => key_from_file(errs, path, file),
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
    let anthropic_beta = cloud::beta_filter(errs, path, p.anthropic_beta.as_ref());
    let prefill = match p.prefill.as_deref() {
        None | Some("auto") => Prefill::Auto,
        Some("true") => Prefill::Yes,
        Some("false") => Prefill::No,
        Some(other) => {
            errs.push(
                format!("{path}.prefill"),
                format!("unknown value {other:?}; expected auto, true or false"),
            );
            Prefill::Auto
        }
    };
    if errs.0.len() != before {
        return None;
    }
    Some(ProviderSettings {
        name: p.name.clone(),
        api: api?,
        kind: kind?,
        base_url,
        upstream: upstream?,
        key,
        key_file: p.api_key_file.as_ref().map(PathBuf::from),
        weight: p.weight,
        max_inflight: p.max_inflight,
        models: p.models.clone(),
        timeouts: resolve(global, &p.timeouts),
        health_check,
        anthropic_beta,
        prefill,
    })
}

fn key_from_env(errs: &mut Errors, path: &str, var: &str, env: &EnvLookup) -> Option<Secret> {
    let at = format!("{path}.api_key_env");
    if !valid_env_name(var) {
        errs.push(
            at,
            format!("{var:?} is not a valid environment variable name"),
        );
        return None;
    }
    match keys::parse(env(var).unwrap_or_default().as_bytes()) {
        Ok(k) => Some(k),
        Err(KeyProblem::Empty) => {
            errs.push(at, format!("environment variable {var} is not set (omit api_key_env to pass the client's key through)"));
            None
        }
        Err(p) => {
            errs.push(at, format!("environment variable {var} {p}"));
            None
        }
    }
}

/// The key in `file` now; an unreadable or empty file is an error at load,
/// like an unset variable (later changes are watched, see `crate::keys`).
fn key_from_file(errs: &mut Errors, path: &str, file: &str) -> Option<Secret> {
    let at = format!("{path}.api_key_file");
    // Relative paths would move with the working directory, which
    // `--daemon` changes: re-reads would miss the file.
    if !Path::new(file).is_absolute() {
        errs.push(at, format!("{file:?} must be an absolute path"));
        return None;
    }
    match keys::read_file(Path::new(file)) {
        Ok(k) => Some(k),
        Err(p) => {
            errs.push(at, format!("key file {file} {p}"));
            None
        }
    }
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
    use super::*;
    use crate::config::schema::HealthCheckConf;

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

    fn conf(name: &str, api: &str, base_url: &str) -> ProviderConf {
        ProviderConf {
            name: name.into(),
            api: api.into(),
            base_url: base_url.into(),
            ..ProviderConf::default()
        }
    }

    fn check(
        errs: &mut Errors,
        list: &[ProviderConf],
        active: Option<ActiveSettings>,
    ) -> Vec<ProviderSettings> {
        let env = |k: &str| (k == "KEY").then(|| " sk-1 ".to_string());
        providers(errs, list, &Timeouts::default(), active, &env)
    }

    #[test]
    fn invalid_providers_are_reported_and_left_out() {
        let mut errs = Errors(Vec::new());
        assert!(check(&mut errs, &[], None).is_empty());
        assert_eq!(errs.paths(), ["providers"]);
        let mut errs = Errors(Vec::new());
        let mut keyed = conf("a", "anthropic", "https://x.com");
        keyed.api_key_env = Some("KEY".into());
        let mut bad_env = conf("b", "openai", "http://127.0.0.1:1");
        bad_env.api_key_env = Some("1KEY".into());
        let mut unset = conf("c", "openai", "http://127.0.0.1:1");
        unset.api_key_env = Some("UNSET".into());
        let list = [
            keyed,
            conf("a", "openai", "http://127.0.0.1:2"),
            conf("", "", ""),
            bad_env,
            unset,
        ];
        let ok = check(&mut errs, &list, None);
        let names: Vec<&str> = ok.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["a", "a"],
            "a duplicate name is reported, not dropped"
        );
        assert_eq!(ok[0].key.as_ref().map(Secret::expose), Some("sk-1"));
        assert_eq!(ok[0].api, Api::Anthropic);
        assert_eq!(ok[1].upstream.port, 2);
        assert_eq!(
            errs.paths(),
            [
                "providers[1].name",
                "providers[2].name",
                "providers[2].api",
                "providers[2].base_url",
                "providers[3].api_key_env",
                "providers[4].api_key_env",
            ]
        );
        assert_eq!(errs.0[0].reason, "duplicate provider name \"a\"");
        assert_eq!(
            errs.0[2].reason,
            "is required: anthropic, openai or openai_responses"
        );
    }

    #[test]
    fn keys_come_from_a_variable_or_a_file_never_both() {
        let dir = std::env::temp_dir().join(format!("steadfast-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "sk-from-file\n").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let two = dir.join("two");
        std::fs::write(&two, "sk-from-file\nsk-other\n").unwrap();
        let file = |name: &str, f: &std::path::Path| {
            let mut c = conf(name, "openai", "http://127.0.0.1:1");
            c.api_key_file = Some(f.display().to_string());
            c
        };
        let mut both = file("both", &good);
        both.api_key_env = Some("KEY".into());
        let mut spaced = conf("spaced", "openai", "http://127.0.0.1:1");
        spaced.api_key_env = Some("SPACED".into());
        let list = [
            file("good", &good),
            both,
            file("relative", std::path::Path::new("keys/a")),
            file("missing", &dir.join("missing")),
            file("empty", &empty),
            file("two", &two),
            spaced,
        ];
        let mut errs = Errors(Vec::new());
        let env = |k: &str| match k {
            "KEY" => Some("sk-1".to_string()),
            "SPACED" => Some("sk 1".to_string()),
            _ => None,
        };
        let ok = providers(&mut errs, &list, &Timeouts::default(), None, &env);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].key.as_ref().map(Secret::expose), Some("sk-from-file"));
        assert_eq!(ok[0].key_file.as_deref(), Some(good.as_path()));
        let got: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
        let want = [
            "providers[1].api_key_file: set either api_key_env or api_key_file, not both",
            "providers[2].api_key_file: \"keys/a\" must be an absolute path",
            "providers[3].api_key_file: key file",
            "providers[4].api_key_file: key file",
            "providers[5].api_key_file: key file",
            "providers[6].api_key_env: environment variable SPACED holds characters",
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g:?} does not start with {w:?}");
            assert!(!g.contains("sk-"), "a key in an error: {g}");
        }
        assert!(got[2].contains("cannot be read"), "{got:?}");
        assert!(got[3].ends_with("is empty"), "{got:?}");
        assert!(got[4].contains("line breaks"), "{got:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn per_provider_limits_timeouts_and_probes() {
        let mut errs = Errors(Vec::new());
        let mut p = conf("p", "openai", "http://127.0.0.1:1");
        p.weight = 0;
        p.max_inflight = Some(0);
        p.models.insert("from".into(), String::new());
        p.timeouts.total_ms = Some(0);
        p.health_check = Some(HealthCheckConf {
            path: "health".into(),
            interval_ms: Some(0),
            timeout_ms: Some(0),
        });
        assert!(check(&mut errs, &[p], None).is_empty());
        assert_eq!(
            errs.paths(),
            [
                "providers[0].weight",
                "providers[0].max_inflight",
                "providers[0].models",
                "providers[0].timeouts.total_ms",
                "providers[0].health_check.path",
                "providers[0].health_check.interval_ms",
                "providers[0].health_check.timeout_ms",
            ]
        );
        // Probe timing: the provider's own, else health.active, else built in.
        let mut errs = Errors(Vec::new());
        let mut p = conf("p", "openai", "http://127.0.0.1:1");
        p.timeouts.connect_ms = Some(9);
        p.health_check = Some(HealthCheckConf {
            path: "/h".into(),
            interval_ms: Some(5),
            timeout_ms: None,
        });
        let active = ActiveSettings {
            interval: ms(100),
            timeout: ms(50),
        };
        let got = check(&mut errs, &[p.clone()], Some(active));
        let probe = got[0].health_check.as_ref().unwrap();
        assert_eq!((probe.interval, probe.timeout), (ms(5), ms(50)));
        assert_eq!(got[0].timeouts.connect, ms(9));
        p.health_check.as_mut().unwrap().interval_ms = None;
        let got = check(&mut errs, &[p], None);
        let probe = got[0].health_check.as_ref().unwrap();
        assert_eq!((probe.interval, probe.timeout), (ms(10_000), ms(3000)));
        assert!(errs.0.is_empty());
    }
}
