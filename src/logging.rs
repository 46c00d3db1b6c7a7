//! Structured logs: one JSON object per line on stderr, or a
//! human text form. steadfast's own events go through [`event`]; records
//! from Pingora and other crates are wrapped as `{"event":"log",...}`.

use crate::config::LogFormat;
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

/// Log target of steadfast's structured events.
pub const EVENT_TARGET: &str = "steadfast::event";

static FORMAT: AtomicU8 = AtomicU8::new(0);

/// Install the logger once per process. `RUST_LOG` sets the level (default
/// info, with Pingora's chatty internals at warn).
pub fn init(format: LogFormat) {
    set_format(format);
    let mut b = env_logger::Builder::new();
    b.filter_level(log::LevelFilter::Info);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    // Whatever RUST_LOG asks for, Pingora's debug and trace output stays
    // off: at those levels it prints whole request headers, keys included.
    for module in PINGORA_MODULES {
        let asked = spec_level(module);
        b.filter_module(module, asked.min(log::LevelFilter::Info));
    }
    b.target(env_logger::Target::Stderr);
    b.format(|buf, record| {
        let line = render(record, current_format());
        writeln!(buf, "{line}")
    });
    // A second init (tests, demo) keeps the first logger.
    let _ = b.try_init();
}

const PINGORA_MODULES: [&str; 7] = [
    "pingora",
    "pingora_core",
    "pingora_proxy",
    "pingora_http",
    "pingora_pool",
    "pingora_load_balancing",
    "pingora_limits",
];

/// The level RUST_LOG names for `module` explicitly (a bare level such as
/// `RUST_LOG=debug` leaves Pingora at its default, warn).
fn spec_level(module: &str) -> log::LevelFilter {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let mut level = log::LevelFilter::Warn;
    for d in spec.split(',').map(str::trim) {
        match d.split_once('=') {
            Some((m, l)) if module.starts_with(m) && !m.is_empty() => {
                level = l.parse().unwrap_or(level);
            }
            _ => {}
        }
    }
    level
}

/// Switch format on reload.
pub fn set_format(format: LogFormat) {
    FORMAT.store(
        match format {
            LogFormat::Json => 0,
            LogFormat::Text => 1,
        },
        Ordering::Relaxed,
    );
}

fn current_format() -> LogFormat {
    match FORMAT.load(Ordering::Relaxed) {
        1 => LogFormat::Text,
        _ => LogFormat::Json,
    }
}

/// Build and emit a structured event.
pub struct Event {
    level: log::Level,
    fields: Map<String, Value>,
}

pub fn event(level: log::Level, name: &str) -> Event {
    let mut fields = Map::new();
    fields.insert("event".into(), Value::from(name));
    Event { level, fields }
}

impl Event {
    pub fn field(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.fields.insert(k.into(), v.into());
        self
    }

    pub fn opt(self, k: &str, v: Option<impl Into<Value>>) -> Self {
        match v {
            Some(v) => self.field(k, v),
            None => self,
        }
    }

    pub fn emit(self) {
        if log::log_enabled!(target: EVENT_TARGET, self.level) {
            let json = Value::Object(self.fields).to_string();
            log::log!(target: EVENT_TARGET, self.level, "{json}");
        }
    }
}

fn render(record: &log::Record, format: LogFormat) -> String {
    let ts = crate::clock::rfc3339(SystemTime::now());
    let level = level_of(record);
    let msg = record.args().to_string();
    let event_json =
        (record.target() == EVENT_TARGET && msg.starts_with('{')).then_some(msg.as_str());
    match format {
        LogFormat::Json => match event_json {
            // Splice ts and level in front of the event's own fields.
            Some(obj) => format!("{{\"ts\":\"{ts}\",\"level\":\"{level}\",{}", &obj[1..]),
            None => {
                let v = serde_json::json!({
                    "ts": ts,
                    "level": level,
                    "event": "log",
                    "target": record.target(),
                    "message": msg,
                });
                v.to_string()
            }
        },
        LogFormat::Text => {
            match event_json.and_then(|o| serde_json::from_str::<Map<String, Value>>(o).ok()) {
                Some(map) => {
                    let name = map
                        .get("event")
                        .and_then(Value::as_str)
                        .unwrap_or("event")
                        .to_string();
                    let mut s = format!("{ts} {level:<5} {name}");
                    for (k, v) in map.iter().filter(|(k, _)| *k != "event") {
                        match v {
                            Value::String(x) => s.push_str(&format!(" {k}={x:?}")),
                            other => s.push_str(&format!(" {k}={other}")),
                        }
                    }
                    s
                }
                None => format!("{ts} {level:<5} [{}] {msg}", record.target()),
            }
        }
    }
}

/// Pingora reports some routine things as errors; they are shown as info
/// to keep alerts meaningful: the normal wait for an upgrade's socket
/// handoff, and every request head the edge refused (Pingora logs the read
/// error it was given; the request's own log line says what happened).
fn level_of(record: &log::Record) -> String {
    if record.level() == log::Level::Error {
        let target = record.target();
        let msg = record.args().to_string();
        if (target.starts_with("pingora_core::server")
            && msg.contains("No incoming socket transfer"))
            || (target.starts_with("pingora_proxy") && msg.contains(crate::edge::REFUSAL))
        {
            return "info".into();
        }
    }
    record.level().as_str().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(target: &'a str, args: std::fmt::Arguments<'a>) -> log::Record<'a> {
        log::Record::builder()
            .target(target)
            .level(log::Level::Warn)
            .args(args)
            .build()
    }

    #[test]
    fn events_render_as_one_json_object_with_ts_and_level() {
        let json = serde_json::json!({"event": "failover", "route": "m"}).to_string();
        let line = render(&rec(EVENT_TARGET, format_args!("{json}")), LogFormat::Json);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "failover");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["route"], "m");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn foreign_records_are_wrapped() {
        let line = render(
            &rec("pingora_core::x", format_args!("a \"quoted\" thing")),
            LogFormat::Json,
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "log");
        assert_eq!(v["message"], "a \"quoted\" thing");
    }

    #[test]
    fn refused_heads_are_not_pingora_errors() {
        let line = |target, msg: &str| {
            let v: Value = serde_json::from_str(&render(
                &log::Record::builder()
                    .target(target)
                    .level(log::Level::Error)
                    .args(format_args!("{msg}"))
                    .build(),
                LogFormat::Json,
            ))
            .unwrap();
            v["level"].as_str().unwrap().to_string()
        };
        let refused = format!(
            "Fail to proxy: Downstream ReadError context: while reading request headers cause: {}: malformed",
            crate::edge::REFUSAL
        );
        assert_eq!(line("pingora_proxy", &refused), "info");
        assert_eq!(line("pingora_proxy", "Fail to proxy: ReadError"), "error");
    }

    #[test]
    fn text_format_is_key_value() {
        let json = serde_json::json!({"event": "request", "status": 200, "route": "m"}).to_string();
        let line = render(&rec(EVENT_TARGET, format_args!("{json}")), LogFormat::Text);
        assert!(line.contains(" request "), "{line}");
        assert!(line.contains("status=200"), "{line}");
        assert!(line.contains("route=\"m\""), "{line}");
    }
}
