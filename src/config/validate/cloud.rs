//! The cloud side of a provider: `kind`, `region`, `project`, and the
//! `anthropic_beta` filter, plus the keys a cloud kind rules out (a key of
//! its own, another api, an unsigned health check).

use super::Errors;
use crate::config::schema::{BetaFilterConf, ProviderConf};
use crate::config::{BetaFilter, ProviderKind};

/// The provider's kind, or `None` once a problem with it is reported.
pub(super) fn kind(errs: &mut Errors, path: &str, p: &ProviderConf) -> Option<ProviderKind> {
    let before = errs.0.len();
    let name = p.kind.as_deref().unwrap_or("direct");
    let cloud = match name {
        "direct" => None,
        "bedrock" | "vertex" => Some(name),
        other => {
            errs.push(
                format!("{path}.kind"),
                format!("unknown kind {other:?}; expected direct, bedrock or vertex"),
            );
            return None;
        }
    };
    let Some(cloud) = cloud else {
        if p.region.is_some() {
            errs.push(format!("{path}.region"), "only for kind bedrock or vertex");
        }
        if p.project.is_some() {
            errs.push(format!("{path}.project"), "only for kind vertex");
        }
        return (errs.0.len() == before).then_some(ProviderKind::Direct);
    };
    if !p.api.is_empty() && p.api != "anthropic" {
        errs.push(
            format!("{path}.api"),
            format!("kind {cloud} serves Claude: api must be anthropic"),
        );
    }
    let chain = if cloud == "bedrock" {
        "the AWS credential chain"
    } else {
        "Google Application Default Credentials"
    };
    for (key, set) in [
        ("api_key_env", p.api_key_env.is_some()),
        ("api_key_file", p.api_key_file.is_some()),
    ] {
        if set {
            errs.push(
                format!("{path}.{key}"),
                format!("not used with kind {cloud}: credentials come from {chain}"),
            );
        }
    }
    if p.health_check.is_some() {
        errs.push(
            format!("{path}.health_check"),
            format!(
                "not supported with kind {cloud}: probes are not signed with cloud credentials"
            ),
        );
    }
    let region = match p.region.as_deref() {
        None | Some("") => {
            errs.push(
                format!("{path}.region"),
                format!(
                    "is required for kind {cloud} (e.g. {})",
                    example_region(cloud)
                ),
            );
            None
        }
        Some(r) if !valid_region(r) => {
            errs.push(
                format!("{path}.region"),
                format!("{r:?} is not a region name (lowercase letters, digits and '-')"),
            );
            None
        }
        Some(r) => Some(r.to_string()),
    };
    let project = match (cloud, p.project.as_deref()) {
        ("vertex", None | Some("")) => {
            errs.push(
                format!("{path}.project"),
                "is required for kind vertex (the Google Cloud project id)",
            );
            None
        }
        ("vertex", Some(id)) if !valid_project(id) => {
            errs.push(
                format!("{path}.project"),
                format!("{id:?} is not a Google Cloud project id"),
            );
            None
        }
        ("vertex", Some(id)) => Some(id.to_string()),
        (_, Some(_)) => {
            errs.push(format!("{path}.project"), "only for kind vertex");
            None
        }
        (_, None) => None,
    };
    if errs.0.len() != before {
        return None;
    }
    let region = region?;
    Some(match project {
        Some(project) => ProviderKind::Vertex { region, project },
        None => ProviderKind::Bedrock { region },
    })
}

fn example_region(cloud: &str) -> &'static str {
    if cloud == "bedrock" {
        "us-east-1"
    } else {
        "us-east5, europe-west1 or global"
    }
}

/// Regions become part of a host name: nothing but a DNS label's letters.
fn valid_region(r: &str) -> bool {
    r.len() <= 63
        && r.starts_with(|c: char| c.is_ascii_lowercase())
        && !r.ends_with('-')
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Project ids (and the older `domain:project` form) go into the request
/// path: only the characters Google allows in them.
fn valid_project(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b))
}

/// A flag as it appears in an `anthropic-beta` header list.
fn valid_flag(f: &str) -> bool {
    !f.is_empty()
        && f.len() <= 128
        && f.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub(super) fn beta_filter(
    errs: &mut Errors,
    path: &str,
    conf: Option<&BetaFilterConf>,
) -> BetaFilter {
    let Some(conf) = conf else {
        return BetaFilter::default();
    };
    for (list, flags) in [("allow", &conf.allow), ("deny", &conf.deny)] {
        for (i, f) in flags.iter().enumerate() {
            if !valid_flag(f) {
                errs.push(
                    format!("{path}.anthropic_beta.{list}[{i}]"),
                    format!("{f:?} is not a beta flag (one name, e.g. \"context-1m-2025-08-07\")"),
                );
            } else if list == "deny" && conf.allow.contains(f) {
                errs.push(
                    format!("{path}.anthropic_beta.deny[{i}]"),
                    format!("{f:?} is also in allow"),
                );
            }
        }
    }
    BetaFilter {
        allow: conf.allow.clone(),
        deny: conf.deny.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::parse_yaml;
    use crate::config::{validate, Config, ConfigError, ConfigSource};

    fn check(providers: &str) -> Result<Config, Vec<ConfigError>> {
        let yaml = format!(
            "providers:\n{providers}\nroutes:\n  - name: m\n    paths: [\"/v1/messages\"]\n    providers: [p]\n"
        );
        let f = parse_yaml(&yaml).map_err(|e| e.0)?;
        validate(&f, ConfigSource::Builtin, &|k| {
            (k == "KEY").then(|| "k".into())
        })
    }

    fn paths(r: Result<Config, Vec<ConfigError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn cloud_providers_are_typed_with_their_default_endpoints() {
        let c = check(
            r#"
  - name: p
    api: anthropic
    kind: bedrock
    region: us-west-2
    models: { "claude-sonnet-4-5": "us.anthropic.claude-sonnet-4-5-20250929-v1:0" }
    anthropic_beta: { deny: ["context-1m-2025-08-07"] }
  - name: v
    api: anthropic
    kind: vertex
    region: global
    project: my-project
    anthropic_beta: { allow: ["a-1", "b-2"] }
  - name: local
    api: anthropic
    kind: vertex
    region: europe-west1
    project: my-project
    base_url: "http://127.0.0.1:9"
  - name: d
    api: anthropic
    kind: direct
    base_url: "https://api.anthropic.com"
"#,
        )
        .unwrap();
        let p = &c.providers;
        assert_eq!(
            p[0].kind,
            ProviderKind::Bedrock {
                region: "us-west-2".into()
            }
        );
        assert_eq!(
            p[0].base_url,
            "https://bedrock-runtime.us-west-2.amazonaws.com"
        );
        assert_eq!(
            p[0].upstream.host,
            "bedrock-runtime.us-west-2.amazonaws.com"
        );
        assert!(p[0].upstream.tls && p[0].upstream.port == 443);
        assert!(p[0].key.is_none());
        assert_eq!(p[0].anthropic_beta.deny, ["context-1m-2025-08-07"]);
        assert_eq!(
            p[1].kind,
            ProviderKind::Vertex {
                region: "global".into(),
                project: "my-project".into()
            }
        );
        assert_eq!(p[1].upstream.host, "aiplatform.googleapis.com");
        assert_eq!(p[1].anthropic_beta.allow, ["a-1", "b-2"]);
        assert_eq!(p[2].upstream.host_header(), "127.0.0.1:9");
        assert_eq!(p[3].kind, ProviderKind::Direct);
        assert_eq!(p[3].anthropic_beta, BetaFilter::default());
    }

    #[test]
    fn cloud_keys_are_checked_with_their_paths() {
        let r = check(
            r#"
  - name: p
    api: openai
    kind: bedrock
    api_key_env: KEY
    project: x
    health_check: { path: "/v1/models" }
  - name: q
    api: anthropic
    kind: vertex
    region: "us-east5.evil.com"
  - name: r
    api: anthropic
    kind: lambda
  - name: s
    api: anthropic
    base_url: "https://api.anthropic.com"
    region: us-east-1
    project: x
    anthropic_beta: { allow: ["a", "b,c"], deny: ["a", ""] }
"#,
        );
        assert_eq!(
            paths(r.clone()),
            [
                "providers[0].api",
                "providers[0].api_key_env",
                "providers[0].health_check",
                "providers[0].region",
                "providers[0].project",
                "providers[1].region",
                "providers[1].project",
                "providers[2].kind",
                "providers[3].region",
                "providers[3].project",
                "providers[3].anthropic_beta.allow[1]",
                "providers[3].anthropic_beta.deny[0]",
                "providers[3].anthropic_beta.deny[1]",
            ]
        );
        let errs = r.unwrap_err();
        assert_eq!(
            errs[1].reason,
            "not used with kind bedrock: credentials come from the AWS credential chain"
        );
        assert_eq!(
            errs[3].reason,
            "is required for kind bedrock (e.g. us-east-1)"
        );
        assert_eq!(errs[4].reason, "only for kind vertex");
        assert_eq!(
            errs[7].reason,
            "unknown kind \"lambda\"; expected direct, bedrock or vertex"
        );
        assert_eq!(errs[11].reason, "\"a\" is also in allow");
        // A bad base_url is still reported for a cloud kind that sets one.
        let r = check("  - { name: p, api: anthropic, kind: bedrock, region: us-east-1, base_url: \"bedrock\" }");
        assert_eq!(paths(r), ["providers[0].base_url"]);
    }

    #[test]
    fn region_and_project_syntax() {
        for ok in ["us-east-1", "europe-west1", "global", "us-gov-west-1"] {
            assert!(valid_region(ok), "{ok}");
        }
        for bad in [
            "",
            "US-EAST-1",
            "us-east-1.evil.com",
            "1us",
            "us-",
            "a/b",
            "us east",
        ] {
            assert!(!valid_region(bad), "{bad}");
        }
        for ok in ["my-project-123", "example.com:my-project", "123456789012"] {
            assert!(valid_project(ok), "{ok}");
        }
        for bad in ["", "My-Project", "p/../../x", "p?x=1", "p%2f"] {
            assert!(!valid_project(bad), "{bad}");
        }
        assert!(valid_flag("context-1m-2025-08-07"));
        assert!(!valid_flag("a,b"));
        assert!(!valid_flag("a b"));
        assert!(!valid_flag(""));
    }
}
