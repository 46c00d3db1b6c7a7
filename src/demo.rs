//! `steadfast demo`: a self-contained tour. Starts mock providers (the
//! primary one failing), runs the real proxy in front of them as a child
//! process, sends a few requests and explains what happened to each. Exits
//! non-zero if anything did not behave as described, so it doubles as a
//! smoke test on a fresh machine.

use crate::mock::{Behavior, MockApi, MockConfig, MockServer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or("-")
    }
}

/// Kills the proxy when the demo ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run() -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(tour()) {
        Ok(()) => {
            println!("\ndemo finished: every step behaved as described.");
            0
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e}");
            1
        }
    }
}

fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

async fn start_mock(name: &str, behavior: Behavior) -> Result<MockServer, String> {
    let cfg = MockConfig {
        api: MockApi::Anthropic,
        name: name.to_string(),
        behavior,
    };
    MockServer::start("127.0.0.1:0".parse().map_err(|_| "addr")?, cfg)
        .await
        .map_err(|e| format!("cannot start mock {name}: {e}"))
}

fn expect(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        println!("   ✓ {what}");
        Ok(())
    } else {
        Err(what.to_string())
    }
}

async fn tour() -> Result<(), String> {
    println!("steadfast {} demo\n", env!("CARGO_PKG_VERSION"));
    let primary = start_mock(
        "primary",
        Behavior {
            status: 503,
            ..Behavior::default()
        },
    )
    .await?;
    let backup = start_mock("backup", Behavior::default()).await?;
    let standby = start_mock("standby", Behavior::default()).await?;
    println!(
        "mock provider 'primary' on {} — answers 503 (overloaded)",
        primary.addr()
    );
    println!("mock provider 'backup'  on {} — healthy", backup.addr());
    println!("mock provider 'standby' on {} — healthy", standby.addr());

    let dir: PathBuf = std::env::temp_dir().join(format!("steadfast-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
    let proxy = free_addr()?;
    let admin = free_addr()?;
    let config = format!(
        r#"listen: {{ proxy: "{proxy}", admin: "{admin}" }}
server:
  pid_file: "{pid}"
  upgrade_sock: "{sock}"
  drain_delay_ms: 0
health: {{ eject_after_failures: 2, base_ejection_ms: 30000 }}
providers:
  - {{ name: primary, api: anthropic, base_url: "http://{p}" }}
  - {{ name: backup, api: anthropic, base_url: "http://{b}" }}
  - {{ name: standby, api: anthropic, base_url: "http://{s}" }}
routes:
  - {{ name: messages, paths: ["/v1/messages"], strategy: priority, providers: [primary, backup, standby] }}
logging: {{ access_log: all }}
"#,
        pid = dir.join("steadfast.pid").display(),
        sock = dir.join("upgrade.sock").display(),
        p = primary.addr(),
        b = backup.addr(),
        s = standby.addr(),
    );
    let config_path = dir.join("steadfast.yaml");
    std::fs::write(&config_path, &config).map_err(|e| format!("write config: {e}"))?;
    let log_path = dir.join("steadfast.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let child = Command::new(exe)
        .args(["serve", "-c"])
        .arg(&config_path)
        .env_remove("STEADFAST_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start proxy: {e}"))?;
    let _guard = ChildGuard(child);
    wait_ready(admin).await?;
    println!("steadfast proxying on http://{proxy} (admin on http://{admin})\n");

    let body =
        r#"{"model":"claude-demo","max_tokens":64,"messages":[{"role":"user","content":"Hi!"}]}"#;
    println!("1. POST /v1/messages — primary fails, steadfast fails over:");
    let r = request(proxy, "POST", "/v1/messages", body).await?;
    explain(&r);
    expect(r.status == 200, "client got 200")?;
    expect(
        r.header("x-steadfast-provider") == "backup",
        "answered by backup",
    )?;
    expect(
        r.header("x-steadfast-attempts") == "2",
        "two attempts: primary (server 503), then backup",
    )?;

    println!("\n2. Again — primary's second failure ejects it (circuit open):");
    let r = request(proxy, "POST", "/v1/messages", body).await?;
    explain(&r);
    expect(
        r.header("x-steadfast-provider") == "backup",
        "answered by backup",
    )?;

    println!("\n3. Again — primary is ejected, so backup is tried first:");
    let before = primary.requests();
    let r = request(proxy, "POST", "/v1/messages", body).await?;
    explain(&r);
    expect(
        r.header("x-steadfast-attempts") == "1",
        "one attempt, straight to backup",
    )?;
    expect(
        primary.requests() == before,
        "the ejected primary received nothing",
    )?;

    println!("\n4. A streaming request (SSE), forwarded event by event:");
    let stream_body = r#"{"model":"claude-demo","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi!"}]}"#;
    let r = request(proxy, "POST", "/v1/messages", stream_body).await?;
    let events = r.body.matches("event: ").count();
    println!(
        "   {} {} events from {}",
        r.status,
        events,
        r.header("x-steadfast-provider")
    );
    expect(
        r.status == 200 && r.body.contains("message_stop"),
        "complete stream ending in message_stop",
    )?;

    println!(
        "\n5. A 200 that fails inside the stream: backup sends message_start, then an\n   overloaded_error event before any content. Nothing reached the client yet,\n   so steadfast fails over to standby:"
    );
    backup.set_behavior(Behavior {
        error_event_after: Some(0),
        ..Behavior::default()
    });
    let r = request(proxy, "POST", "/v1/messages", stream_body).await?;
    explain(&r);
    expect(
        r.status == 200 && r.header("x-steadfast-provider") == "standby",
        "answered by standby inside the same 200",
    )?;
    expect(
        r.body.matches("event: message_start").count() == 1
            && !r.body.contains("overloaded_error")
            && r.body.contains("message_stop"),
        "one clean stream: a single message_start, no trace of backup's error",
    )?;
    backup.set_behavior(Behavior::default());

    println!("\n6. A bad request (400) is the client's fault: returned as is, no failover:");
    backup.set_behavior(Behavior {
        status: 400,
        ..Behavior::default()
    });
    let r = request(proxy, "POST", "/v1/messages", body).await?;
    explain(&r);
    expect(r.status == 400, "client got the provider's 400")?;
    expect(
        r.header("x-steadfast-error-class") == "request",
        "classified as a request error",
    )?;

    println!("\n7. Every provider down: a clear error in the Anthropic dialect:");
    backup.stop().await;
    primary.stop().await;
    standby.stop().await;
    // Twice: the second failure ejects backup and standby too.
    request(proxy, "POST", "/v1/messages", body).await?;
    let r = request(proxy, "POST", "/v1/messages", body).await?;
    explain(&r);
    println!("   body: {}", r.body);
    expect(r.status == 502, "client got 502 naming every provider")?;

    println!("\n8. /health on the admin listener:");
    let h = request(admin, "GET", "/health", "").await?;
    println!("   {} {}", h.status, h.body);
    expect(
        h.status == 503 && h.body.contains("\"unhealthy\""),
        "health reports the route as unhealthy",
    )?;

    println!("\naccess log lines written by the proxy:");
    if let Ok(text) = std::fs::read_to_string(&log_path) {
        for line in text.lines().filter(|l| l.contains("\"event\":\"request\"")) {
            println!("   {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn explain(r: &Reply) {
    println!(
        "   {} from {} after {} attempt(s){}",
        r.status,
        r.header("x-steadfast-provider"),
        r.header("x-steadfast-attempts"),
        match r.header("x-steadfast-error-class") {
            "-" => String::new(),
            c => format!(", class {c}"),
        }
    );
}

async fn wait_ready(admin: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = request(admin, "GET", "/ready", "").await {
            if r.status == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err("proxy did not become ready within 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One HTTP/1.1 request with `Connection: close`, read to the end.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<Reply, String> {
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || blocking_request(addr, &method, &path, &body))
        .await
        .map_err(|e| e.to_string())?
}

fn blocking_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<Reply, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nx-api-key: demo-client-key\r\nanthropic-version: 2023-06-01\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete response")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]).into_owned();
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}
