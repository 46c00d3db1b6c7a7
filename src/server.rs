//! `steadfast serve`: load the config, build the Pingora server with the
//! proxy and admin services, and run it until a signal ends it.

use crate::app::App;
use crate::config::{self, Config, ConfigSource};
use crate::edge::Edge;
use crate::lifecycle::Signals;
use crate::proxy::SteadfastProxy;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Read buffer of a client connection (Pingora's default is 64 KiB).
const DOWNSTREAM_READ_BUFFER: usize = 4096;

pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub upgrade: bool,
    pub daemon: bool,
}

/// Load and validate the config the way `serve` and `check` both do.
pub fn load_config(
    flag: Option<&std::path::Path>,
) -> (ConfigSource, Result<Config, config::ConfigErrors>) {
    let env = |k: &str| std::env::var(k).ok();
    let source = config::resolve_source(flag, &env);
    let loaded = config::load(&source, &env);
    (source, loaded)
}

/// Resolve every provider host in parallel, waiting at most `limit`; hosts
/// that do not resolve in time start unresolved and are retried in the
/// background, so an offline machine still starts.
pub fn resolve_all(cfg: &Config, limit: Duration) -> Vec<Option<SocketAddr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, p) in cfg.providers.iter().enumerate() {
        let tx = tx.clone();
        let u = p.upstream.clone();
        std::thread::spawn(move || {
            let _ = tx.send((i, crate::provider::resolve_blocking(&u).ok()));
        });
    }
    drop(tx);
    let mut out = vec![None; cfg.providers.len()];
    let deadline = std::time::Instant::now() + limit;
    while let Ok((i, a)) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        out[i] = a;
    }
    out
}

pub fn run(opts: ServeOptions) -> i32 {
    let (source, loaded) = load_config(opts.config.as_deref());
    let cfg = match loaded {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("steadfast: invalid config ({}):", source.describe());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            return 1;
        }
    };
    crate::logging::init(cfg.logging.format);
    if !opts.upgrade {
        // Pingora retries a busy port in the background while everything
        // else starts; refuse to start half-configured instead.
        for (key, addr) in [
            ("listen.proxy", cfg.listen_proxy),
            ("listen.admin", cfg.listen_admin),
        ] {
            if let Err(e) = can_bind(addr) {
                eprintln!("steadfast: cannot listen on {addr} ({key}): {e}");
                return 1;
            }
        }
    }
    let addrs = resolve_all(&cfg, Duration::from_secs(3));
    let app = App::new(cfg.clone(), &addrs);

    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&cfg, opts.daemon));
    crate::lifecycle::add_service(&mut server, app.clone());
    if let Some(t) = &cfg.telemetry {
        crate::otel::install(&mut server, t);
    }
    // In upgrade mode this waits for the old process to hand its sockets over.
    server.bootstrap();
    // Read only now: during an upgrade, the old process took admin calls
    // until the handover just done, and wrote each change to the file.
    crate::control::restore(&app);
    if !opts.daemon {
        if let Err(e) = crate::lifecycle::pidfile::write(&cfg.server.pid_file) {
            crate::logging::event(log::Level::Warn, "pid_file_failed")
                .field("path", cfg.server.pid_file.as_str())
                .field("error", e.to_string())
                .emit();
        }
    }

    let mut http =
        pingora_proxy::http_proxy(&server.configuration, SteadfastProxy { app: app.clone() });
    let mut o = HttpServerOptions::default();
    o.h2c = true;
    http.server_options = Some(o);
    // The edge runs the connection loop itself, to bound request heads.
    let mut proxy = Service::new("steadfast proxy".to_string(), Edge::new(http, app.clone()));
    // Pingora parses requests in its own buffers; a 64 KiB read buffer per
    // client connection is mostly dead weight for a proxy holding thousands
    // of long-lived streams.
    proxy.add_listener(
        ListenerConfig::tcp(cfg.listen_proxy.to_string())
            .l4_buffer(L4BufferSettings::default().read(DOWNSTREAM_READ_BUFFER)),
    );
    server.add_service(proxy);
    crate::admin::add_service(&mut server, app.clone(), cfg.listen_admin);
    crate::resolver::add_service(&mut server, app.clone());
    crate::lifecycle::reload::add_service(&mut server, app.clone());
    crate::health::probe::add_service(&mut server, app.clone());
    crate::control::add_service(&mut server, app.clone());
    crate::cloud::service::add_service(&mut server, app.clone());

    crate::logging::event(log::Level::Info, "started")
        .field("version", env!("CARGO_PKG_VERSION"))
        .field("config", source.describe())
        .field("proxy", cfg.listen_proxy.to_string())
        .field("admin", cfg.listen_admin.to_string())
        .field("pid", std::process::id())
        .emit();
    crate::lifecycle::add_readiness(&mut server, app.clone(), cfg.listen_proxy);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            app: Arc::clone(&app),
        }),
    });
    crate::lifecycle::exit_now(&app, 0)
}

/// Pingora's server settings from the config's `server` section.
fn server_conf(cfg: &Config, daemon: bool) -> ServerConf {
    ServerConf {
        daemon,
        threads: cfg.server.threads,
        work_stealing: cfg.server.work_stealing,
        pid_file: cfg.server.pid_file.clone(),
        upgrade_sock: cfg.server.upgrade_sock.clone(),
        // Drain is ours (lifecycle::Signals); Pingora's grace period only
        // bounds it from above.
        grace_period_seconds: Some(cfg.server.shutdown_timeout.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    }
}

/// Whether `addr` can be bound the way Pingora binds it (SO_REUSEADDR, so a
/// port with connections in TIME_WAIT is not mistaken for a busy one).
fn can_bind(addr: SocketAddr) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        sock.bind(addr)?;
        drop(sock.listen(1)?);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        let f = config::parse_yaml(yaml).unwrap();
        config::validate(&f, ConfigSource::Builtin, &|_| None).unwrap()
    }

    #[test]
    fn the_server_section_reaches_pingora() {
        let routes = "providers: [{name: a, api: anthropic, base_url: \"http://127.0.0.1:1\"}]\nroutes: [{name: r, paths: [\"/\"], providers: [a]}]\n";
        let c = server_conf(&cfg(routes), false);
        assert_eq!(c.threads, 2);
        assert!(c.work_stealing, "default unchanged: Pingora's own");
        let c = server_conf(
            &cfg(&format!(
                "server: {{ threads: 3, work_stealing: false, shutdown_timeout_ms: 4000 }}\n{routes}"
            )),
            true,
        );
        assert_eq!(c.threads, 3);
        assert!(!c.work_stealing);
        assert!(c.daemon);
        assert_eq!(c.grace_period_seconds, Some(5));
    }
}
