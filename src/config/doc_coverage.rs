//! `docs/configuration.md` against the schema: every key the file format
//! takes is documented, every documented key exists, and every documented
//! default is the one the code applies. The key list comes from the serde
//! structs themselves (a fully populated [`FileConfig`] serialised), so a
//! key added to the schema fails this test until it is documented.
//!
//! The fixtures below are written as exhaustive struct literals (no
//! `..Default::default()`): a new field does not compile until it is given
//! a value here, and a value left unset (`None`) fails the test, so a new
//! optional section cannot hide its keys.

use super::schema::*;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

const DOC: &str = "docs/configuration.md";

fn doc_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DOC);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every key set, every optional section present, one entry per list.
fn populated() -> FileConfig {
    let timeouts = TimeoutOverrides {
        connect_ms: Some(1),
        response_header_ms: Some(1),
        response_header_stream_ms: Some(1),
        first_content_ms: Some(1),
        stream_idle_ms: Some(1),
        total_ms: Some(1),
    };
    FileConfig {
        listen: Listen {
            proxy: "p".into(),
            admin: "a".into(),
        },
        server: ServerSection {
            threads: 1,
            work_stealing: false,
            pid_file: "f".into(),
            upgrade_sock: "s".into(),
            drain_delay_ms: 1,
            shutdown_timeout_ms: 1,
        },
        limits: Limits {
            max_inflight: 1,
            queue_timeout_ms: 1,
            max_body_bytes: 1,
            max_header_bytes: 1,
            header_timeout_ms: 1,
        },
        timeouts: Timeouts {
            connect_ms: 1,
            response_header_ms: 1,
            response_header_stream_ms: 1,
            first_content_ms: 1,
            stream_idle_ms: 1,
            total_ms: 1,
        },
        retry: Retry {
            max_attempts: 1,
            failover_on: vec!["network".into()],
            resume_streams: true,
        },
        health: Health {
            eject_after_failures: 1,
            base_ejection_ms: 1,
            max_ejection_ms: 1,
            max_retry_after_ms: 1,
            recovery_probe_interval_ms: 1,
            active: Some(ActiveHealth {
                interval_ms: 1,
                timeout_ms: 1,
            }),
        },
        providers: vec![ProviderConf {
            name: "n".into(),
            api: "anthropic".into(),
            kind: Some("direct".into()),
            region: Some("r".into()),
            project: Some("p".into()),
            base_url: "u".into(),
            api_key_env: Some("E".into()),
            api_key_file: Some("/f".into()),
            weight: 1,
            max_inflight: Some(1),
            // A map of the operator's own names: documented as one key.
            models: BTreeMap::new(),
            timeouts,
            health_check: Some(HealthCheckConf {
                path: "/".into(),
                interval_ms: Some(1),
                timeout_ms: Some(1),
            }),
            anthropic_beta: Some(BetaFilterConf {
                allow: vec!["a".into()],
                deny: vec!["d".into()],
            }),
            prefill: Some("auto".into()),
        }],
        routes: vec![RouteConf {
            name: "r".into(),
            paths: vec!["/".into()],
            strategy: Some("priority".into()),
            providers: vec!["n".into()],
            translate: true,
            affinity: Some("session".into()),
        }],
        client_auth: Some(ClientAuth {
            tokens_env: "T".into(),
        }),
        admin: AdminConf {
            token_env: Some("A".into()),
        },
        logging: Logging {
            format: "json".into(),
            access_log: "all".into(),
            slow_ms: 1,
        },
        telemetry: Telemetry {
            otlp_endpoint: Some("http://c:4317".into()),
            sample_ratio: 1.0,
            max_queued_spans: 1,
            export_timeout_ms: 1,
        },
    }
}

/// The defaults the code applies, with one default entry per list and
/// each optional section present with its own defaults, so that the keys
/// inside them have a default to compare with.
fn defaults() -> FileConfig {
    FileConfig {
        health: Health {
            active: Some(ActiveHealth::default()),
            ..Health::default()
        },
        providers: vec![ProviderConf {
            health_check: Some(HealthCheckConf::default()),
            anthropic_beta: Some(BetaFilterConf::default()),
            ..ProviderConf::default()
        }],
        routes: vec![RouteConf::default()],
        client_auth: Some(ClientAuth::default()),
        ..FileConfig::default()
    }
}

/// `path → value` for every leaf of `v`; `sections` gets every path that
/// has keys below it. Lists of mappings are walked as `key[]`.
fn walk(
    v: &Value,
    path: &str,
    leaves: &mut BTreeMap<String, Value>,
    sections: &mut BTreeSet<String>,
) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            if !path.is_empty() {
                sections.insert(path.to_string());
            }
            for (k, child) in m {
                let k = k.as_str().expect("schema keys are strings");
                let p = if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                };
                walk(child, &p, leaves, sections);
            }
        }
        Value::Sequence(s) if s.first().is_some_and(Value::is_mapping) => {
            walk(&s[0], &format!("{path}[]"), leaves, sections);
            sections.insert(path.to_string());
        }
        _ => {
            leaves.insert(path.to_string(), v.clone());
        }
    }
}

fn keys_of(cfg: &FileConfig) -> (BTreeMap<String, Value>, BTreeSet<String>) {
    let v = serde_yaml::to_value(cfg).expect("the schema serialises");
    let (mut leaves, mut sections) = (BTreeMap::new(), BTreeSet::new());
    walk(&v, "", &mut leaves, &mut sections);
    (leaves, sections)
}

/// A documented key: its path and its default cell.
struct DocRow {
    key: String,
    default: String,
}

/// Rows of every table whose header starts `| key | default |`; the key is
/// the first cell's text in backticks.
fn doc_rows(doc: &str) -> Vec<DocRow> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in doc.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() >= 2 && cells[0] == "key" && cells[1] == "default" {
            in_table = true;
            continue;
        }
        if !in_table || cells[0].starts_with("---") {
            continue;
        }
        let key = cells[0].trim_matches('`').to_string();
        rows.push(DocRow {
            key,
            default: cells.get(1).copied().unwrap_or("").to_string(),
        });
    }
    rows
}

/// The default as the docs write it: a scalar as is, a list as
/// `[a, b]`; `None` where there is nothing to compare (unset, empty).
fn rendered_default(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Sequence(s) if s.is_empty() => None,
        Value::Sequence(s) => {
            let items: Vec<String> = s.iter().filter_map(rendered_default).collect();
            Some(format!("[{}]", items.join(", ")))
        }
        _ => None,
    }
}

/// The first `code` span of a cell, without quotes around it.
fn first_code(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(cell[start..start + len].trim_matches('"'))
}

#[test]
fn every_schema_key_is_documented_and_every_documented_key_exists() {
    let (leaves, sections) = keys_of(&populated());
    let unset: Vec<&String> = leaves
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k)
        .collect();
    assert!(
        unset.is_empty(),
        "the fixture in {} leaves {unset:?} unset: give every optional key a value so its \
         section's keys are listed",
        file!()
    );
    let rows = doc_rows(&doc_text());
    assert!(rows.len() > 40, "{DOC}: only {} keys found", rows.len());
    let documented: BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let undocumented: Vec<&String> = leaves
        .keys()
        .filter(|k| !documented.contains(k.as_str()))
        .collect();
    let unknown: Vec<&&str> = documented
        .iter()
        .filter(|k| !leaves.contains_key(**k) && !sections.contains(**k))
        .collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "{DOC} is out of step with src/config/schema.rs:\n  keys in the schema but not in \
         the doc: {undocumented:?}\n  keys in the doc but not in the schema: {unknown:?}\n\
         (each key is a row `| `path.to.key` | default | ... |` of a table headed \
         `| key | default | ...`)"
    );
    let mut seen = BTreeSet::new();
    let twice: Vec<&str> = rows
        .iter()
        .map(|r| r.key.as_str())
        .filter(|k| !seen.insert(*k))
        .collect();
    assert!(twice.is_empty(), "{DOC} documents {twice:?} twice");
}

#[test]
fn documented_defaults_are_the_code_defaults() {
    let (defaults, _) = keys_of(&defaults());
    let mut wrong = Vec::new();
    for row in doc_rows(&doc_text()) {
        let Some(want) = defaults.get(&row.key).and_then(rendered_default) else {
            continue;
        };
        match first_code(&row.default) {
            Some(got) if got == want => {}
            got => wrong.push(format!(
                "{}: the doc says {:?}, the code's default is `{want}`",
                row.key,
                got.unwrap_or(&row.default)
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{DOC}: wrong defaults:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn every_example_config_is_referenced() {
    let doc = doc_text();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/examples");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("conf/examples") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".yaml") && !doc.contains(&format!("conf/examples/{name}")) {
            missing.push(name.to_string());
        }
    }
    assert!(missing.is_empty(), "{DOC} does not reference {missing:?}");
}

#[test]
fn the_parser_sees_keys_and_defaults() {
    let doc = "text\n\n| key | default | rule |\n|---|---|---|\n| `a.b` | `5` | x |\n\
               | `c` | unset | y |\n\n| class | x |\n|---|---|\n| `network` | z |\n";
    let rows = doc_rows(doc);
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["a.b", "c"]);
    assert_eq!(first_code(&rows[0].default), Some("5"));
    assert_eq!(first_code(&rows[1].default), None);
    assert_eq!(
        rendered_default(&serde_yaml::to_value(vec!["a", "b"]).unwrap()),
        Some("[a, b]".into())
    );
}
