//! The deployment assets against the real binary: the image's HEALTHCHECK
//! command, the Kubernetes probes and grace periods, the shipped configs,
//! and the upgrade/entrypoint scripts the systemd unit and the image use.
//! The static checks (schemas, kustomize, compose, systemd-analyze,
//! hadolint) are in scripts/validate-deploy.sh.
//!
//! Nothing here needs a mock provider (the processes under test are
//! started by shell scripts); ports and directories come from the shared
//! test helpers like everywhere else.

mod common;

use common::{bin, free_addr, test_dir as shared_test_dir};
use serde_yaml::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn test_dir(name: &str) -> PathBuf {
    shared_test_dir(&format!("deploy-{name}"))
}

fn yaml_file(rel: &str) -> Value {
    let text = std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// GET on a fresh connection; the status, or None when nothing answered.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace().nth(1)?.parse().ok()
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Running and not a zombie. Processes started by the upgrade script are
/// not our children, so `Child::try_wait` cannot see them.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
                != Some('Z')
        }
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn kill(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills every process it knows of when the test ends, however it ends.
#[derive(Default)]
struct Reaper {
    children: Vec<Child>,
    pids: Vec<u32>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.pids {
            if alive(*pid) {
                kill("KILL", *pid);
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn admin_port(conf: &Value) -> u16 {
    let admin = str_at(conf, &["listen", "admin"]).unwrap_or("127.0.0.1:9090");
    admin
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("listen.admin port")
}

fn config_ms(conf: &Value, key: &str, default: u64) -> u64 {
    conf.get("server")
        .and_then(|s| s.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

/// The steadfast config inside the ConfigMap of k8s/common.
fn configmap() -> (String, Value) {
    let cm = yaml_file("k8s/common/configmap.yaml");
    let name = str_at(&cm, &["metadata", "name"]).unwrap().to_string();
    let text = str_at(&cm, &["data", "steadfast.yaml"]).expect("ConfigMap data steadfast.yaml");
    (name, serde_yaml::from_str(text).unwrap())
}

/// Names of the variables the k8s Secret provides.
fn secret_keys() -> Vec<String> {
    let s = yaml_file("k8s/secret.yaml");
    let mut keys = Vec::new();
    for section in ["stringData", "data"] {
        if let Some(m) = s.get(section).and_then(Value::as_mapping) {
            keys.extend(m.keys().filter_map(Value::as_str).map(String::from));
        }
    }
    keys
}

/// Where the steadfast container of a Deployment mounts the Secret of
/// provider keys (k8s/secret.yaml), if it does.
fn secret_mount(file: &str) -> Option<String> {
    let dep = yaml_file(file);
    let secret = yaml_file("k8s/secret.yaml");
    let secret_name = str_at(&secret, &["metadata", "name"])?.to_string();
    let spec = &dep["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_sequence()?
        .iter()
        .find(|v| str_at(v, &["secret", "secretName"]) == Some(secret_name.as_str()))?;
    let c = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_sequence))
        .flatten()
        .find(|c| c["name"] == "steadfast")?;
    c["volumeMounts"].as_sequence()?.iter().find_map(|m| {
        // A subPath mount never sees the Secret change.
        (m["name"] == volume["name"] && m.get("subPath").is_none())
            .then(|| str_at(m, &["mountPath"]).map(String::from))
            .flatten()
    })
}

fn key_files(conf: &Value) -> Vec<String> {
    conf.get("providers")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|p| str_at(p, &["api_key_file"]).map(String::from))
        .collect()
}

/// `text` as it runs in the pod, here: every key of the Secret written as
/// a file under `dir` (a dummy value), and the Secret's mount path in the
/// text pointed there.
fn with_secret_files(text: &str, mount: &str, dir: &Path) -> String {
    let keys_dir = dir.join("secret-volume");
    std::fs::create_dir_all(&keys_dir).unwrap();
    for k in secret_keys() {
        std::fs::write(keys_dir.join(k), "dummy-value\n").unwrap();
    }
    text.replace(
        &format!("{}/", mount.trim_end_matches('/')),
        &format!("{}/", keys_dir.display()),
    )
}

fn key_envs(conf: &Value) -> Vec<String> {
    conf.get("providers")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|p| str_at(p, &["api_key_env"]).map(String::from))
        .collect()
}

/// `steadfast check` with a clean environment holding exactly `keys`.
fn check(config_text: &str, keys: &[String], what: &str) {
    let dir = test_dir("check");
    let path = dir.join("steadfast.yaml");
    std::fs::write(&path, config_text).unwrap();
    let out = Command::new(bin())
        .arg("check")
        .arg("-c")
        .arg(&path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(keys.iter().map(|k| (k.as_str(), "dummy-value")))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what} fails steadfast check:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The exec-form command of the Dockerfile's HEALTHCHECK.
fn dockerfile_healthcheck() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if cur.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => cur.push_str(part),
            None => {
                cur.push_str(line);
                joined.push(std::mem::take(&mut cur));
            }
        }
    }
    let hc: Vec<_> = joined
        .iter()
        .filter(|l| l.trim_start().starts_with("HEALTHCHECK"))
        .collect();
    assert_eq!(hc.len(), 1, "one HEALTHCHECK in the Dockerfile");
    let cmd = hc[0]
        .split_once(" CMD ")
        .expect("HEALTHCHECK ... CMD")
        .1
        .trim();
    serde_json::from_str(cmd).expect("HEALTHCHECK CMD in exec (JSON) form")
}

fn config(dir: &Path, proxy: SocketAddr, admin: SocketAddr, drain_ms: u64) -> PathBuf {
    let path = dir.join("steadfast.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {{ proxy: \"{proxy}\", admin: \"{admin}\" }}\n\
             server: {{ pid_file: \"{d}/steadfast.pid\", upgrade_sock: \"{d}/upgrade.sock\", drain_delay_ms: {drain_ms}, shutdown_timeout_ms: 3000 }}\n\
             providers: [{{ name: p1, api: anthropic, base_url: \"http://127.0.0.1:1\" }}]\n\
             routes: [{{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}]\n",
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

fn serve(config: &Path, dir: &Path) -> Child {
    Command::new(bin())
        .arg("serve")
        .arg("-c")
        .arg(config)
        .env_remove("STEADFAST_CONFIG")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("stderr.log")).unwrap(),
        ))
        .spawn()
        .expect("spawn steadfast")
}

#[test]
fn dockerfile_healthcheck_command_follows_health_draining_and_exit() {
    let argv = dockerfile_healthcheck();
    assert_eq!(
        argv[..2],
        ["/usr/local/bin/steadfast", "healthcheck"],
        "{argv:?}"
    );
    // The URL must point at the image config's admin listener; the test
    // then substitutes its own address for it (and the binary's path).
    let image_conf = yaml_file("deploy/docker/steadfast.yaml");
    let url_at = argv.iter().position(|a| a == "--url").map(|i| i + 1);
    let url = url_at
        .map(|i| argv[i].clone())
        .unwrap_or_else(|| "http://127.0.0.1:9090/health".into());
    let image_admin = format!("127.0.0.1:{}", admin_port(&image_conf));
    assert_eq!(
        url,
        format!("http://{image_admin}/health"),
        "HEALTHCHECK must GET /health on the image's admin port"
    );

    let dir = test_dir("healthcheck");
    let (proxy, admin) = (free_addr(), free_addr());
    let cfg = config(&dir, proxy, admin, 3000);
    let mut reaper = Reaper::default();
    reaper.children.push(serve(&cfg, &dir));
    let run_hc = || {
        let mut args: Vec<String> = argv[1..].to_vec();
        match url_at {
            Some(i) => args[i - 1] = args[i - 1].replace(&image_admin, &admin.to_string()),
            None => args.extend(["--url".into(), format!("http://{admin}/health")]),
        }
        Command::new(bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    assert!(
        wait_for(Duration::from_secs(20), || http_status(admin, "/ready")
            == Some(200)),
        "not ready"
    );
    assert!(run_hc().success(), "healthy process: HEALTHCHECK must pass");

    let pid = reaper.children[0].id();
    kill("TERM", pid);
    assert!(
        wait_for(Duration::from_secs(2), || http_status(admin, "/ready")
            == Some(503)),
        "SIGTERM must start draining"
    );
    assert_eq!(http_status(admin, "/health"), Some(503));
    assert_eq!(
        run_hc().code(),
        Some(1),
        "draining process: HEALTHCHECK must fail"
    );

    let st = wait_child(&mut reaper.children[0], Duration::from_secs(15))
        .expect("steadfast did not exit after SIGTERM");
    assert!(st.success(), "{st:?}");
    assert_eq!(
        run_hc().code(),
        Some(1),
        "stopped process: HEALTHCHECK must fail"
    );
}

#[test]
fn kubernetes_probes_and_grace_periods_match_the_configmap() {
    let (cm_name, conf) = configmap();
    let admin = str_at(&conf, &["listen", "admin"]).expect("listen.admin set in the ConfigMap");
    assert!(
        admin.starts_with("0.0.0.0:") || admin.starts_with("[::]:"),
        "kubelet probes the pod IP: the admin listener must not be loopback-only ({admin})"
    );
    let port = admin_port(&conf);
    let drain_ms =
        config_ms(&conf, "drain_delay_ms", 5000) + config_ms(&conf, "shutdown_timeout_ms", 25000);

    for file in ["k8s/deployment.yaml", "k8s/classic-sidecar/deployment.yaml"] {
        let dep = yaml_file(file);
        let spec = &dep["spec"]["template"]["spec"];
        let containers = ["initContainers", "containers"]
            .iter()
            .filter_map(|k| spec.get(*k).and_then(Value::as_sequence))
            .flatten();
        let sidecar = containers
            .filter(|c| c["name"] == "steadfast")
            .collect::<Vec<_>>();
        assert_eq!(sidecar.len(), 1, "{file}: one steadfast container");
        let c = sidecar[0];

        // The ConfigMap mounted is the one checked here.
        let mounted_cm = spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find_map(|v| str_at(v, &["configMap", "name"]))
            .expect("a ConfigMap volume");
        assert_eq!(mounted_cm, cm_name, "{file}");

        let resolve = |p: &Value| -> u16 {
            match p {
                Value::Number(n) => n.as_u64().unwrap() as u16,
                Value::String(name) => c["ports"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|cp| cp["name"].as_str() == Some(name))
                    .and_then(|cp| cp["containerPort"].as_u64())
                    .unwrap_or_else(|| panic!("{file}: no container port named {name}"))
                    as u16,
                _ => panic!("{file}: bad probe port {p:?}"),
            }
        };
        for (probe, path) in [
            ("startupProbe", "/ready"),
            ("readinessProbe", "/ready"),
            ("livenessProbe", "/live"),
        ] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{file}: {probe} path");
            assert_eq!(
                resolve(&get["port"]),
                port,
                "{file}: {probe} must target the admin port {port}"
            );
            assert!(
                matches!(get["scheme"].as_str(), None | Some("HTTP")),
                "{file}: {probe} scheme"
            );
        }

        // preStop sleep (classic sidecar) comes out of the same budget.
        let pre_stop_s = c["lifecycle"]["preStop"]["exec"]["command"]
            .as_sequence()
            .filter(|cmd| {
                cmd.first()
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.ends_with("sleep"))
            })
            .and_then(|cmd| cmd.get(1)?.as_str()?.parse::<u64>().ok())
            .unwrap_or(0);
        let grace = spec["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        let need = pre_stop_s + drain_ms.div_ceil(1000);
        assert!(
            grace >= need,
            "{file}: terminationGracePeriodSeconds {grace} < preStop {pre_stop_s} s + (drain_delay_ms + shutdown_timeout_ms)/1000 = {need}"
        );
    }

    // The probe paths answer 200 on a process running the ConfigMap's
    // config (listeners and runtime paths moved to the test's), started
    // with nothing but the Secret's variables and files.
    let dir = test_dir("configmap");
    let (proxy, admin) = (free_addr(), free_addr());
    let mut m = conf.as_mapping().unwrap().clone();
    m.remove("listen");
    m.remove("server");
    let mut text = serde_yaml::to_string(&m).unwrap();
    text.push_str(&format!(
        "listen: {{ proxy: \"{proxy}\", admin: \"{admin}\" }}\nserver: {{ pid_file: \"{d}/s.pid\", upgrade_sock: \"{d}/u.sock\", drain_delay_ms: 0 }}\n",
        d = dir.display()
    ));
    let mount = secret_mount("k8s/deployment.yaml").expect("the Secret is mounted");
    let text = with_secret_files(&text, &mount, &dir);
    let cfg = dir.join("steadfast.yaml");
    std::fs::write(&cfg, text).unwrap();
    let mut reaper = Reaper::default();
    reaper.children.push(
        Command::new(bin())
            .arg("serve")
            .arg("-c")
            .arg(&cfg)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(secret_keys().iter().map(|k| (k.as_str(), "dummy-value")))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let up = wait_for(Duration::from_secs(20), || {
        http_status(admin, "/ready") == Some(200)
    });
    assert!(
        up,
        "the ConfigMap config did not start:\n{}",
        std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
    );
    assert_eq!(http_status(admin, "/live"), Some(200));
}

#[test]
fn shipped_deploy_configs_pass_check_with_the_keys_their_deployment_provides() {
    let (_, conf) = configmap();
    let keys = secret_keys();
    for k in key_envs(&conf) {
        assert!(
            keys.contains(&k),
            "k8s/secret.yaml lacks {k}, which the ConfigMap names"
        );
    }
    // Key files come from the Secret's volume, mounted as a directory (so
    // that a rotation reaches the pod) in both variants.
    let files = key_files(&conf);
    assert!(
        !files.is_empty() || !key_envs(&conf).is_empty(),
        "the ConfigMap uses none of the Secret's keys"
    );
    let mut mount = None;
    for dep in ["k8s/deployment.yaml", "k8s/classic-sidecar/deployment.yaml"] {
        let m = secret_mount(dep);
        if !files.is_empty() {
            assert!(
                m.is_some(),
                "{dep}: the Secret is not mounted as a directory into steadfast"
            );
        }
        mount = mount.or(m);
    }
    for f in &files {
        let path = Path::new(f);
        let m = mount.as_deref().unwrap_or_default();
        assert_eq!(
            path.parent().and_then(Path::to_str),
            Some(m.trim_end_matches('/')),
            "{f} is not in the Secret's mount {m}"
        );
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(
            keys.iter().any(|k| k == name),
            "k8s/secret.yaml lacks {name}, which the ConfigMap reads as {f}"
        );
    }
    let text = serde_yaml::to_string(&conf).unwrap();
    let text = match &mount {
        Some(m) => with_secret_files(&text, m, &test_dir("secret-files")),
        None => text,
    };
    check(&text, &keys, "the ConfigMap config with the Secret's keys");

    let image = std::fs::read_to_string(root().join("deploy/docker/steadfast.yaml")).unwrap();
    check(&image, &[], "the image config, with no key set");

    let env_example =
        std::fs::read_to_string(root().join("deploy/systemd/steadfast.env.example")).unwrap();
    let systemd_keys: Vec<String> = env_example
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect();
    let systemd = std::fs::read_to_string(root().join("deploy/systemd/steadfast.yaml")).unwrap();
    check(
        &systemd,
        &systemd_keys,
        "the systemd config with steadfast.env.example's keys",
    );

    let compose = yaml_file("deploy/docker-compose/compose.yaml");
    let compose_keys: Vec<String> = compose["services"]["steadfast"]["environment"]
        .as_mapping()
        .expect("compose steadfast environment")
        .keys()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    let compose_conf =
        std::fs::read_to_string(root().join("deploy/docker-compose/config/steadfast.yaml"))
            .unwrap();
    check(
        &compose_conf,
        &compose_keys,
        "the compose config with the keys compose passes",
    );
}

/// Requests that need no provider: 404 from the proxy listener (no route)
/// and 200 from the admin listener, on fresh connections, in a loop.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicUsize>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: SocketAddr, admin: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let workers = [(proxy, "/no-such-route", 404), (admin, "/live", 200)]
            .into_iter()
            .map(|(addr, path, want)| {
                let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let got = http_status(addr, path);
                        if got != Some(want) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{addr}{path}: {got:?}"));
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            failures,
            done,
            workers,
        }
    }

    /// Stop; the failures seen and the number of requests sent.
    fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (failures, self.done.load(Ordering::Relaxed))
    }
}

#[test]
fn upgrade_script_hands_the_sockets_over_and_the_entrypoint_follows() {
    let dir = test_dir("upgrade");
    let (proxy, admin) = (free_addr(), free_addr());
    let cfg = config(&dir, proxy, admin, 0);
    let pid_file = dir.join("steadfast.pid");
    let scripts = root().join("deploy/bin");
    let env = [
        ("STEADFAST_BIN", bin().to_string()),
        ("STEADFAST_CONFIG", cfg.display().to_string()),
        ("STEADFAST_PID_FILE", pid_file.display().to_string()),
        (
            "STEADFAST_UPGRADE_SOCK",
            dir.join("upgrade.sock").display().to_string(),
        ),
        ("STEADFAST_READY_URL", format!("http://{admin}/ready")),
        (
            "STEADFAST_UPGRADE_LOG",
            dir.join("upgraded.log").display().to_string(),
        ),
        ("STEADFAST_UPGRADE_TIMEOUT", "20".to_string()),
        ("RUST_LOG", "info".to_string()),
    ];
    let script = |name: &str| {
        let mut c = Command::new("sh");
        c.arg(scripts.join(name))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&dir)
            .stdin(Stdio::null());
        c
    };
    let log = |name: &str| {
        Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap(),
        )
    };
    let logs = || {
        ["entrypoint.log", "upgrade.log", "upgraded.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(dir.join(f)).unwrap_or_default()
                )
            })
            .collect::<String>()
    };

    // Commands other than serve go straight to the binary.
    let out = script("steadfast-entrypoint")
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    let mut reaper = Reaper::default();
    let entry = script("steadfast-entrypoint")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log("entrypoint.log"))
        .spawn()
        .unwrap();
    reaper.children.push(entry);
    assert!(
        wait_for(Duration::from_secs(20), || http_status(admin, "/ready")
            == Some(200)),
        "not ready:\n{}",
        logs()
    );
    let first = read_pid(&pid_file).expect("pid file");
    reaper.pids.push(first);

    let load = Load::start(proxy, admin);
    std::thread::sleep(Duration::from_millis(300));

    // A config the new process would reject: the upgrade stops before
    // anything moves.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "providers: []\n").unwrap();
    let st = script("steadfast-upgrade")
        .env("STEADFAST_CONFIG", &bad)
        .stdout(Stdio::null())
        .stderr(log("upgrade.log"))
        .status()
        .unwrap();
    assert!(!st.success(), "upgrade with a broken config must fail");
    assert_eq!(
        read_pid(&pid_file),
        Some(first),
        "a failed upgrade must leave the pid file alone"
    );
    assert!(
        alive(first),
        "a failed upgrade must leave the running process alone"
    );

    let mut pids = vec![first];
    for round in 1..=2 {
        let st = script("steadfast-upgrade")
            .stdout(Stdio::null())
            .stderr(log("upgrade.log"))
            .status()
            .unwrap();
        assert!(st.success(), "upgrade {round} failed:\n{}", logs());
        let new = read_pid(&pid_file).expect("pid file after upgrade");
        reaper.pids.push(new);
        assert!(
            !pids.contains(&new),
            "upgrade {round}: the pid file must name a new process"
        );
        assert!(alive(new), "upgrade {round}: the new process must run");
        let old = *pids.last().unwrap();
        assert!(
            wait_for(Duration::from_secs(20), || !alive(old)),
            "upgrade {round}: old process {old} did not exit:\n{}",
            logs()
        );
        assert!(
            reaper.children[0].try_wait().unwrap().is_none(),
            "upgrade {round}: the entrypoint must outlive the old process:\n{}",
            logs()
        );
        assert_eq!(http_status(admin, "/ready"), Some(200));
        pids.push(new);
    }

    let (failures, done) = load.finish();
    // The drain waits for a quiet window after the listener closes, so a
    // connection accepted at the last moment is served, not dropped.
    assert!(
        failures.is_empty(),
        "{} requests failed across 2 upgrades, e.g. {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(3)],
        logs()
    );
    assert!(done > 20, "too little load to mean anything");

    // docker stop: SIGTERM to the entrypoint reaches the current process,
    // which drains; the container then ends with status 0.
    let last = *pids.last().unwrap();
    kill("TERM", reaper.children[0].id());
    let st = wait_child(&mut reaper.children[0], Duration::from_secs(20))
        .unwrap_or_else(|| panic!("entrypoint did not exit:\n{}", logs()));
    assert!(st.success(), "entrypoint exit {st:?}:\n{}", logs());
    assert!(!alive(last), "the upgraded process must have exited");
    assert!(!pid_file.exists(), "a clean exit removes the pid file");
}
