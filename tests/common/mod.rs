//! Test harness: runs the real `steadfast` binary on loopback ports with a
//! generated config, and in-process mock providers it can be pointed at.

#![allow(dead_code)]

pub mod clouds;
pub mod http;
pub mod scripted;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use steadfast::mock::{Behavior, MockApi, MockConfig, MockServer};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_steadfast")
}

/// A loopback port that was free a moment ago, for a proxy to bind later
/// (or for nothing to listen on).
///
/// Taken from below the kernel's ephemeral range, one port per call: a mock
/// bound to port 0 and every outgoing connection get ephemeral ports, so
/// they can never land on a port some test picked here and has not bound
/// yet (which sent one test's readiness polls to another test's mock).
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000; // below 32768, Linux's default ephemeral start
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    // Test binaries may run side by side: start each at its own offset.
    let _ = NEXT.compare_exchange(
        usize::MAX,
        std::process::id() as usize * 97,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = FIRST + (NEXT.fetch_add(1, Ordering::SeqCst) % SPAN as usize) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A fresh directory for one test's files.
pub fn test_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

pub async fn mock(api: MockApi, name: &str, behavior: Behavior) -> MockServer {
    MockServer::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            api,
            name: name.to_string(),
            behavior,
        },
    )
    .await
    .expect("start mock")
}

pub async fn anthropic(name: &str) -> MockServer {
    mock(MockApi::Anthropic, name, Behavior::default()).await
}

pub fn status(code: u16) -> Behavior {
    Behavior {
        status: code,
        ..Behavior::default()
    }
}

/// A running `steadfast serve`.
pub struct Proxy {
    child: Option<Child>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

pub struct ProxyBuilder {
    body: String,
    env: Vec<(String, String)>,
    env_removed: Vec<String>,
    name: String,
    args: Vec<String>,
    /// Files written into the test directory before the start.
    files: Vec<(String, String)>,
    /// The admin listener's IP (loopback unless told otherwise).
    admin_ip: String,
    /// Extra keys of the generated `server` section.
    server: String,
}

impl ProxyBuilder {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Start the proxy without this variable of the test's environment.
    pub fn env_remove(mut self, k: &str) -> Self {
        self.env_removed.push(k.into());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    /// Write `contents` to `name` in the proxy's directory before it starts
    /// (a state file left by an earlier run, say).
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.into(), contents.into()));
        self
    }

    /// Add `keys` (YAML flow-map entries, e.g. "work_stealing: false") to
    /// the generated `server` section.
    pub fn server(mut self, keys: &str) -> Self {
        self.server = keys.into();
        self
    }

    /// Bind the admin listener on `ip` (e.g. "0.0.0.0") instead of
    /// loopback; `Proxy::admin` still reaches it over loopback.
    pub fn admin_ip(mut self, ip: &str) -> Self {
        self.admin_ip = ip.into();
        self
    }

    /// Start and wait until `/ready` answers 200.
    pub async fn start(self) -> Proxy {
        let p = self.spawn();
        p.wait_ready().await;
        p
    }

    /// Start without waiting.
    pub fn spawn(self) -> Proxy {
        let dir = test_dir(&self.name);
        register_secrets(&dir, &self.env);
        register_key_files(&self.body);
        for (name, contents) in &self.files {
            std::fs::write(dir.join(name), contents).expect("write test file");
        }
        let proxy = free_addr();
        let admin = free_addr();
        let mut yaml = String::new();
        if !self.body.contains("listen:") {
            yaml.push_str(&format!(
                "listen:\n  proxy: \"{proxy}\"\n  admin: \"{}:{}\"\n",
                self.admin_ip,
                admin.port()
            ));
        }
        if !self.body.contains("server:") {
            yaml.push_str(&format!(
                "server:\n  threads: 2\n  pid_file: \"{}\"\n  upgrade_sock: \"{}\"\n  drain_delay_ms: 0\n  shutdown_timeout_ms: 5000\n",
                dir.join("steadfast.pid").display(),
                dir.join("upgrade.sock").display()
            ));
            for kv in self.server.split(',').filter(|kv| !kv.trim().is_empty()) {
                yaml.push_str(&format!("  {}\n", kv.trim()));
            }
        }
        if !self.body.contains("logging:") {
            yaml.push_str("logging:\n  access_log: all\n");
        }
        yaml.push_str(&self.body);
        let config_path = dir.join("steadfast.yaml");
        std::fs::write(&config_path, &yaml).expect("write config");
        let log_path = dir.join("stderr.log");
        let child = self.launch(&config_path, &log_path, &dir);
        Proxy {
            child: Some(child),
            proxy,
            admin,
            dir,
            config_path,
            log_path,
        }
    }

    fn launch(&self, config: &Path, log: &Path, dir: &Path) -> Child {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg("-c").arg(config);
        cmd.args(&self.args);
        cmd.current_dir(dir);
        cmd.env_remove("STEADFAST_CONFIG");
        cmd.env("RUST_LOG", "info");
        for k in &self.env_removed {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        cmd.spawn().expect("spawn steadfast")
    }
}

impl Proxy {
    /// `body` is the YAML after `listen`/`server`, e.g. providers and routes.
    pub fn builder(name: &str, body: &str) -> ProxyBuilder {
        ProxyBuilder {
            body: body.to_string(),
            env: Vec::new(),
            env_removed: Vec::new(),
            name: name.to_string(),
            args: Vec::new(),
            files: Vec::new(),
            admin_ip: "127.0.0.1".into(),
            server: String::new(),
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = http::send_timeout(
                self.admin,
                http::Request::get("/ready"),
                Duration::from_secs(2),
            )
            .await
            {
                if r.status == 200 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("steadfast did not become ready; log:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Log lines that are JSON events with this `event` name.
    pub fn events(&self, name: &str) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == name)
            .collect()
    }

    /// Wait until a log event matching `pred` appears.
    pub async fn wait_event(
        &self,
        name: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = self.events(name).into_iter().find(|v| pred(v)) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("no {name} event matched; log:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Wait for the process to exit, polling without blocking the runtime.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Some(st);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn send(&self, req: http::Request<'_>) -> http::Response {
        http::send(self.proxy, req).await
    }

    /// Start `serve --upgrade` on the same config: it waits for this
    /// process's listening sockets, which SIGQUIT hands over.
    pub fn spawn_upgrade(&self) -> Proxy {
        let log_path = self.dir.join("stderr-upgraded.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new(bin())
            .arg("serve")
            .arg("-c")
            .arg(&self.config_path)
            .arg("--upgrade")
            .current_dir(&self.dir)
            .env_remove("STEADFAST_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn upgraded steadfast");
        Proxy {
            child: Some(child),
            proxy: self.proxy,
            admin: self.admin,
            dir: self.dir.clone(),
            config_path: self.config_path.clone(),
            log_path,
        }
    }

    /// Replace the config file (the proxy is not told; see `signal("HUP")`).
    pub fn write_config(&self, body: &str) {
        let current = std::fs::read_to_string(&self.config_path).expect("read config");
        // Keep the generated listen/server/logging header, replace the rest.
        let header: String = current
            .lines()
            .take_while(|l| {
                !l.starts_with("providers:")
                    && !l.starts_with("routes:")
                    && !l.starts_with("limits:")
                    && !l.starts_with("timeouts:")
                    && !l.starts_with("retry:")
                    && !l.starts_with("health:")
                    && !l.starts_with("client_auth:")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, format!("{header}{body}")).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("swap config");
    }
}

/// Stop a mock and start a new one on the same address, as a provider
/// restart looks from the outside.
pub async fn restart(m: MockServer, api: MockApi, name: &str) -> MockServer {
    let addr = m.addr();
    let behavior = m.behavior();
    m.stop().await;
    MockServer::start(
        addr,
        MockConfig {
            api,
            name: name.to_string(),
            behavior,
        },
    )
    .await
    .expect("restart mock on the same port")
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_no_secret_logged(self);
    }
}

/// Secret values a test handed to the proxy (env vars named `*_KEY` and
/// `*_TOKEN`, and the comma-separated `*_TOKENS`), by test directory, so
/// every test in the suite also checks that none of them reached the logs.
static SECRETS: std::sync::Mutex<Vec<(PathBuf, Vec<String>)>> = std::sync::Mutex::new(Vec::new());

/// Keys that went into key files (`api_key_file`), current and rotated
/// away alike. Checked against the logs of every proxy: each test writes
/// keys of its own, so a match anywhere is a leak.
static KEY_FILE_SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn register_secrets(dir: &Path, env: &[(String, String)]) {
    let mut secrets = Vec::new();
    for (k, v) in env {
        if k.ends_with("_KEY") || k.ends_with("_TOKEN") {
            secrets.push(v.clone());
        } else if k.ends_with("_TOKENS") {
            secrets.extend(v.split(',').map(|t| t.trim().to_string()));
        }
    }
    // Very short values would match unrelated text.
    secrets.retain(|s| s.len() >= 6);
    if !secrets.is_empty() {
        SECRETS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((dir.to_path_buf(), secrets));
    }
}

/// A key that went into a key file: never to be seen in any log.
pub fn register_key_secret(key: &str) {
    let key = key.trim();
    if key.len() >= 6 {
        KEY_FILE_SECRETS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.to_string());
    }
}

/// The keys in the files a config's `api_key_file` entries name, as they
/// are when the proxy starts.
fn register_key_files(body: &str) {
    for line in body.lines() {
        if let Some(v) = line.trim().strip_prefix("api_key_file:") {
            let path = v.trim().trim_matches('"');
            if let Ok(key) = std::fs::read_to_string(path) {
                register_key_secret(&key);
            }
        }
    }
}

/// Replace a key file the way a careful tool does: write a temporary file
/// next to it, then rename it over the old one. The key is registered as
/// a secret.
pub fn write_key_file(path: &Path, key: &str) {
    register_key_secret(key);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, key).expect("write key");
    std::fs::rename(&tmp, path).expect("swap key");
}

fn assert_no_secret_logged(p: &Proxy) {
    if std::thread::panicking() {
        return;
    }
    let secrets: Vec<String> = SECRETS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(d, _)| *d == p.dir)
        .flat_map(|(_, s)| s.clone())
        .collect();
    let key_files = KEY_FILE_SECRETS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if secrets.is_empty() && key_files.is_empty() {
        return;
    }
    let logs = p.logs();
    for (i, s) in secrets.iter().enumerate() {
        assert!(
            !logs.contains(s.as_str()),
            "secret #{i} passed via the environment appears in {}",
            p.log_path.display()
        );
    }
    for (i, s) in key_files.iter().enumerate() {
        assert!(
            !logs.contains(s.as_str()),
            "key #{i} of a key file appears in {}",
            p.log_path.display()
        );
    }
}

/// A config with one provider `p1` and one route `r` on `path` to it.
pub fn one_route(path: &str, api: &str, addr: SocketAddr) -> String {
    format!(
        "providers:\n{}routes:\n  - {{ name: r, paths: [\"{path}\"], providers: [p1] }}\n",
        provider("p1", api, addr, "")
    )
}

/// YAML for one provider entry.
pub fn provider(name: &str, api: &str, addr: SocketAddr, extra: &str) -> String {
    format!("  - name: {name}\n    api: {api}\n    base_url: \"http://{addr}\"\n{extra}")
}
