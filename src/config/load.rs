//! Reading a config file: find it, parse it, collect every unknown key, then
//! validate. Only the first *type* error can be reported (serde stops there),
//! but unknown keys and semantic problems are all reported at once.

use super::schema::FileConfig;
use super::{validate, Config, ConfigError, ConfigErrors, EnvLookup};
use std::path::{Path, PathBuf};

/// Where the running config came from; reloads re-read the same source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Builtin,
}

impl ConfigSource {
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Builtin => "built-in default".to_string(),
        }
    }
}

pub const DEFAULT_PATH: &str = "conf/steadfast.yaml";
pub const ENV_VAR: &str = "STEADFAST_CONFIG";

/// Where the config comes from: `-c FILE`, else `$STEADFAST_CONFIG`, else
/// `conf/steadfast.yaml` when it exists, else the built-in default. An explicitly named file that
/// does not exist is an error later (at read), never a silent fallback.
pub fn resolve_source(flag: Option<&Path>, env: &EnvLookup) -> ConfigSource {
    if let Some(p) = flag {
        return ConfigSource::File(p.to_path_buf());
    }
    if let Some(p) = env(ENV_VAR).filter(|v| !v.is_empty()) {
        return ConfigSource::File(PathBuf::from(p));
    }
    let default = Path::new(DEFAULT_PATH);
    if default.exists() {
        return ConfigSource::File(default.to_path_buf());
    }
    ConfigSource::Builtin
}

/// Load and validate the config from `source`, reading keys through `env`.
pub fn load(source: &ConfigSource, env: &EnvLookup) -> Result<Config, ConfigErrors> {
    let file = read_file_config(source)?;
    validate(&file, source.clone(), env).map_err(ConfigErrors)
}

/// The file as written, parsed but not validated: for tools that need a
/// few settings of a config whose keys they do not hold (`steadfast
/// provider` reads the admin address and token variable).
pub fn read_file_config(source: &ConfigSource) -> Result<FileConfig, ConfigErrors> {
    match source {
        ConfigSource::Builtin => Ok(super::builtin_default()),
        ConfigSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigErrors(vec![ConfigError::new(
                    "",
                    format!("cannot read config file {}: {e}", path.display()),
                )])
            })?;
            parse_yaml(&text)
        }
    }
}

/// Parse YAML text into the file schema, reporting unknown keys by path.
pub fn parse_yaml(text: &str) -> Result<FileConfig, ConfigErrors> {
    // An empty file is a valid "all defaults" file, but serde_yaml refuses it.
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let mut unknown = Vec::new();
    let de = serde_yaml::Deserializer::from_str(text);
    let mut track = |path: serde_ignored::Path| unknown.push(path.to_string());
    let ignoring = serde_ignored::Deserializer::new(de, &mut track);
    let parsed: Result<FileConfig, _> = serde_path_to_error::deserialize(ignoring);
    let mut errors: Vec<ConfigError> = unknown
        .iter()
        .map(|p| ConfigError::new(normalize_path(p), "unknown key"))
        .collect();
    match parsed {
        Ok(cfg) if errors.is_empty() => Ok(cfg),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(e) => {
            let path = normalize_path(&e.path().to_string());
            let inner = e.into_inner();
            let reason = strip_location(&inner.to_string());
            errors.push(ConfigError::new(
                if path == "." { String::new() } else { path },
                reason,
            ));
            Err(ConfigErrors(errors))
        }
    }
}

/// serde paths look like `providers[0].name` already; serde_ignored uses
/// `providers.0.name`. Normalise both to the bracket form.
fn normalize_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for (i, seg) in p.split('.').enumerate() {
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if i > 0 && !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// serde_yaml appends " at line X column Y" which is useful; keep it, but
/// drop the redundant leading path that serde_path_to_error already gives.
fn strip_location(msg: &str) -> String {
    match msg.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && head.contains('.') => rest.to_string(),
        _ => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_all_reported_with_paths() {
        let text = "listen:\n  proxy: \"127.0.0.1:1\"\n  bogus: 1\nproviders:\n  - name: a\n    api: anthropic\n    base_url: http://x\n    wieght: 2\ntypo_section: {}\n";
        let err = parse_yaml(text).unwrap_err();
        let paths: Vec<_> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"listen.bogus"), "{paths:?}");
        assert!(paths.contains(&"providers[0].wieght"), "{paths:?}");
        assert!(paths.contains(&"typo_section"), "{paths:?}");
        assert!(err.0.iter().all(|e| e.reason == "unknown key"));
    }

    #[test]
    fn type_errors_name_the_key() {
        let err = parse_yaml("limits:\n  max_inflight: lots\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].path, "limits.max_inflight");
        assert!(err.0[0].reason.contains("invalid"), "{}", err.0[0].reason);
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(parse_yaml("\n").unwrap(), FileConfig::default());
    }

    #[test]
    fn source_resolution_order() {
        let none: &EnvLookup = &|_| None;
        let flag = Path::new("/x.yaml");
        assert_eq!(
            resolve_source(Some(flag), none),
            ConfigSource::File(flag.into())
        );
        let env: &EnvLookup = &|k| (k == ENV_VAR).then(|| "/env.yaml".to_string());
        assert_eq!(
            resolve_source(None, env),
            ConfigSource::File("/env.yaml".into())
        );
        assert_eq!(
            resolve_source(Some(flag), env),
            ConfigSource::File(flag.into())
        );
    }

    #[test]
    fn path_normalisation() {
        assert_eq!(normalize_path("providers.0.name"), "providers[0].name");
        assert_eq!(normalize_path("routes.1.paths.0"), "routes[1].paths[0]");
        assert_eq!(normalize_path("listen"), "listen");
    }
}
