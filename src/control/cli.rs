//! `steadfast provider list|disable|enable`: the admin API from a shell, so
//! that nobody has to hand-craft curl during an incident.
//!
//! The admin address comes from the config like `serve` finds it (`-c`,
//! else `$STEADFAST_CONFIG`, else `conf/steadfast.yaml`, else the built-in
//! default), or from `--admin`; the token from the variable the config's
//! `admin.token_env` names, or `--token-env`. There is deliberately no flag
//! taking the token itself: a command line is visible to every user of the
//! machine (`ps`, `/proc/*/cmdline`) and lands in shell history.
//!
//! Exit codes: 0 done; 1 the call failed (refused, unknown provider,
//! listener unreachable); 2 bad usage (flags, TTL, config, token variable).

use crate::config::{self, ConfigSource};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest admin answer read (a list of hundreds of providers fits).
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Show every provider and its state.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Take a provider out of routing now: for --ttl, or until enabled.
    Disable {
        /// The provider's name in the config.
        name: String,
        /// How long, with a unit: 90s, 15m, 1h, 2h30m (default: until enabled).
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put a disabled provider back into routing.
    Enable {
        /// The provider's name in the config.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Config file to take the admin address (listen.admin) and token
    /// variable (admin.token_env) from; found like `serve` finds it.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// The admin listener, as http://HOST:PORT or HOST:PORT (overrides the config).
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// Environment variable holding the admin token (overrides admin.token_env).
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
}

/// A failure, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    fn code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

/// Run one `steadfast provider` command; returns the exit code.
pub fn run(cmd: ProviderCommand) -> i32 {
    match execute(cmd) {
        Ok(out) => {
            println!("{out}");
            0
        }
        Err(e) => {
            eprintln!("steadfast provider: {e}");
            e.code()
        }
    }
}

/// Provider names are `[a-z0-9_-]+` (the config allows nothing else), so
/// one goes into a path as it is.
fn check_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{name:?} is not a provider name ([a-z0-9_-]+); see `steadfast provider list`"
        )))
    }
}

fn execute(cmd: ProviderCommand) -> Result<String, CliError> {
    if let ProviderCommand::Disable { name, .. } | ProviderCommand::Enable { name, .. } = &cmd {
        check_name(name)?;
    }
    match cmd {
        ProviderCommand::List { admin, json } => {
            let target = Target::resolve(&admin, false)?;
            let v = target.call("GET", "/providers")?;
            Ok(if json { v.to_string() } else { table(&v) })
        }
        ProviderCommand::Disable { name, ttl, admin } => {
            let ttl = ttl.as_deref().map(parse_ttl).transpose()?;
            let target = Target::resolve(&admin, true)?;
            let path = match ttl {
                Some(t) => format!("/providers/{name}/disable?ttl_ms={}", t.as_millis()),
                None => format!("/providers/{name}/disable"),
            };
            let v = target.call("POST", &path)?;
            let until = v["provider"]["disabled_until"].as_str();
            Ok(match (until, ttl) {
                (Some(u), Some(t)) => format!("{name}: disabled until {u} ({})", human(t)),
                _ => format!("{name}: disabled until enabled"),
            })
        }
        ProviderCommand::Enable { name, admin } => {
            let target = Target::resolve(&admin, true)?;
            let v = target.call("POST", &format!("/providers/{name}/enable"))?;
            Ok(if v["changed"] == Value::Bool(true) {
                format!("{name}: enabled")
            } else {
                format!("{name}: was not disabled; nothing changed")
            })
        }
    }
}

/// `--ttl`: a duration with its unit (`1h`, `15m`, `90s`, `2h30m`, `500ms`).
/// A bare number is refused: "60" is an hour to one operator and a minute
/// to the next.
fn parse_ttl(s: &str) -> Result<Duration, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "--ttl {s:?}: use a duration with a unit, e.g. 90s, 15m, 1h, 2h30m"
        ))
    };
    let s = s.trim();
    if s.is_empty() || s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let d = crate::health::parse_go_duration(s).ok_or_else(bad)?;
    if d < Duration::from_millis(1) {
        return Err(CliError::Usage(format!(
            "--ttl {s:?} is under a millisecond"
        )));
    }
    if d > super::MAX_TTL {
        return Err(CliError::Usage(format!(
            "--ttl {s:?} is longer than the longest TTL ({}); omit --ttl to disable until enabled",
            human(super::MAX_TTL)
        )));
    }
    // Whole milliseconds, rounded up: what the API takes.
    let ms = d.as_nanos().div_ceil(1_000_000);
    Ok(Duration::from_millis(ms.min(u64::MAX as u128) as u64))
}

/// `1h30m`, `45s`, `250ms`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Where to send the call, and with which token.
struct Target {
    addr: String,
    /// Where the address came from, for error messages.
    from: String,
    token: Option<String>,
}

impl Target {
    fn resolve(a: &AdminArgs, state_changing: bool) -> Result<Target, CliError> {
        let env = |k: &str| std::env::var(k).ok();
        let source = config::resolve_source(a.config.as_deref(), &env);
        let file = config::read_file_config(&source)
            .map_err(|e| CliError::Usage(format!("config {}: {}", source.describe(), e)))?;
        let (addr, from) = match &a.admin {
            Some(url) => (admin_url(url)?, "--admin".to_string()),
            None => {
                let listen: SocketAddr = file.listen.admin.parse().map_err(|_| {
                    CliError::Usage(format!(
                        "listen.admin {:?} in {} is not an address; pass --admin",
                        file.listen.admin,
                        source.describe()
                    ))
                })?;
                let from = match &source {
                    ConfigSource::File(p) => format!("listen.admin in {}", p.display()),
                    ConfigSource::Builtin => "the built-in default listen.admin".to_string(),
                };
                (connectable(listen).to_string(), from)
            }
        };
        let var = a.token_env.clone().or(file.admin.token_env);
        let token = match var {
            None => None,
            Some(var) => match env(&var).map(|v| v.trim().to_string()) {
                Some(t) if !t.is_empty() => Some(t),
                // Reads need no token; a state change would be refused.
                _ if !state_changing => None,
                _ => {
                    return Err(CliError::Usage(format!(
                        "the admin token is read from ${var}, which is not set here"
                    )))
                }
            },
        };
        Ok(Target { addr, from, token })
    }

    /// One call; the answer's JSON, or why there is none.
    fn call(&self, method: &str, path: &str) -> Result<Value, CliError> {
        let unreachable = |e: std::io::Error| {
            CliError::Failed(format!(
                "cannot reach the admin listener at {} ({}): {e}",
                self.addr, self.from
            ))
        };
        let sock = self
            .addr
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| CliError::Failed(format!("no address for {}", self.addr)))?;
        let mut s = TcpStream::connect_timeout(&sock, TIMEOUT).map_err(unreachable)?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(unreachable)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(unreachable)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: steadfast-cli/{}\r\nContent-Length: 0\r\n",
            self.addr,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).map_err(unreachable)?;
        let mut raw = Vec::new();
        s.take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .map_err(unreachable)?;
        let (status, body) = split_response(&raw).ok_or_else(|| {
            CliError::Failed(format!(
                "{} ({}) did not answer with HTTP",
                self.addr, self.from
            ))
        })?;
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let why = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
        Err(CliError::Failed(format!(
            "{method} {path}: {status}: {why}"
        )))
    }
}

/// Status and body of a whole HTTP/1.1 response read to its end.
fn split_response(raw: &[u8]) -> Option<(u16, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, &raw[end + 4..]))
}

/// `http://host:port`, `host:port` → `host:port`.
fn admin_url(url: &str) -> Result<String, CliError> {
    if url.starts_with("https://") {
        return Err(CliError::Usage(
            "--admin: the admin listener speaks plain HTTP (http://HOST:PORT)".into(),
        ));
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(CliError::Usage(format!(
            "--admin {url:?}: expected http://HOST:PORT"
        )));
    }
    Ok(authority.to_string())
}

/// A listener on every interface is reached on loopback.
fn connectable(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    }
}

/// The list as a table for people.
fn table(v: &Value) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".to_string(),
        "DISABLED UNTIL".to_string(),
        "ROUTES".to_string(),
    ]];
    for p in v["providers"].as_array().into_iter().flatten() {
        let until = match (p["disabled"].as_bool(), p["disabled_until"].as_str()) {
            (Some(true), Some(u)) => u.to_string(),
            (Some(true), None) => "until enabled".to_string(),
            _ => "-".to_string(),
        };
        let routes: Vec<&str> = p["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push([
            p["name"].as_str().unwrap_or("?").to_string(),
            p["state"].as_str().unwrap_or("?").to_string(),
            until,
            routes.join(","),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            line.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_needs_a_unit_and_a_sane_length() {
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_ttl("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "60", "1.5", "1d", "h", "-1h", "0s", "10us", "9000h"] {
            let e = parse_ttl(bad).unwrap_err();
            assert_eq!(e.code(), 2, "{bad}: {e}");
        }
    }

    #[test]
    fn durations_read_back_for_people() {
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::ZERO), "0s");
    }

    #[test]
    fn admin_addresses() {
        assert_eq!(
            admin_url("http://127.0.0.1:9090").unwrap(),
            "127.0.0.1:9090"
        );
        assert_eq!(
            admin_url("http://127.0.0.1:9090/").unwrap(),
            "127.0.0.1:9090"
        );
        assert_eq!(admin_url("localhost:9090").unwrap(), "localhost:9090");
        assert_eq!(admin_url("[::1]:9090").unwrap(), "[::1]:9090");
        for bad in ["https://x:1", "http://x", "http://x:1/health", ""] {
            assert!(admin_url(bad).is_err(), "{bad}");
        }
        let any: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        assert_eq!(connectable(any), "127.0.0.1:9090".parse().unwrap());
        let any6: SocketAddr = "[::]:9090".parse().unwrap();
        assert_eq!(connectable(any6), "[::1]:9090".parse().unwrap());
        let one: SocketAddr = "10.1.2.3:9090".parse().unwrap();
        assert_eq!(connectable(one), one);
    }

    #[test]
    fn responses_split_into_status_and_body() {
        let raw = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(split_response(raw), Some((404, &b"{}"[..])));
        assert_eq!(split_response(b"garbage"), None);
    }

    #[test]
    fn the_table_shows_disables() {
        let v = serde_json::json!({"providers": [
            {"name": "a", "state": "healthy", "disabled": false, "disabled_until": null, "routes": ["m"]},
            {"name": "bb", "state": "disabled", "disabled": true, "disabled_until": null, "routes": ["m", "c"]},
            {"name": "c", "state": "disabled", "disabled": true, "disabled_until": "2026-01-01T00:00:00.000Z", "routes": []},
        ]});
        let t = table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME  STATE     DISABLED UNTIL            ROUTES");
        assert_eq!(lines[1], "a     healthy   -                         m");
        assert_eq!(lines[2], "bb    disabled  until enabled             m,c");
        assert_eq!(lines[3], "c     disabled  2026-01-01T00:00:00.000Z");
    }
}
