//! Signals, drain, reload and upgrade.
//!
//! Pingora's own SIGTERM handling sleeps a fixed grace period. Ours flips
//! `/ready` to 503 at once, keeps accepting for `drain_delay_ms`, then lets
//! Pingora stop the listeners and exits as soon as no request is left (or
//! `shutdown_timeout_ms` has passed). SIGQUIT hands the listening sockets to
//! a `serve --upgrade` process through Pingora, then drains the same way.

pub mod pidfile;
pub mod reload;

use crate::app::App;
use crate::logging::event;
use async_trait::async_trait;
use log::Level;
use pingora_core::server::{
    ExecutionPhase, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use pingora_core::services::background::{background_service, BackgroundService};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

/// How long no request may be in flight before a draining process exits.
const QUIET_WINDOW: Duration = Duration::from_millis(150);
/// WebSocket tunnels never finish on their own: they are closed this long
/// before the drain deadline, so that they end cleanly, with their access
/// log lines, before the process exits.
const TUNNEL_CLOSE_LEAD: Duration = Duration::from_millis(300);

pub struct Signals {
    pub app: Arc<App>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            event(Level::Error, "signal_setup_failed").emit();
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {
                event(Level::Info, "shutdown").field("signal", "SIGINT").field("mode", "fast").emit();
                // The runtimes stop at once after this: export the spans
                // waiting for their batch first (bounded, and only while
                // tracing is on).
                let _ = tokio::task::spawn_blocking(crate::otel::flush_at_exit).await;
                ShutdownSignal::FastShutdown
            }
            _ = term.recv() => {
                let delay = self.app.runtime().config.server.drain_delay;
                self.app.draining.store(true, Ordering::SeqCst);
                event(Level::Info, "draining")
                    .field("signal", "SIGTERM")
                    .field("drain_delay_ms", delay.as_millis() as u64)
                    .field("inflight", crate::gauges::active())
                    .emit();
                // Keep accepting while load balancers and kube-proxy notice
                // that /ready answers 503.
                tokio::time::sleep(delay).await;
                ShutdownSignal::GracefulTerminate
            }
            _ = quit.recv() => {
                self.app.draining.store(true, Ordering::SeqCst);
                event(Level::Info, "draining")
                    .field("signal", "SIGQUIT")
                    .field("mode", "upgrade")
                    .field("inflight", crate::gauges::active())
                    .emit();
                ShutdownSignal::GracefulUpgrade
            }
        }
    }
}

/// Runs the drain watch. A service rather than a thread started up front:
/// `--daemon` forks inside `Server::run`, and threads do not survive a fork.
struct DrainWatch {
    app: Arc<App>,
    phases: std::sync::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let phases = self.phases.lock().ok().and_then(|mut p| p.take());
        if let Some(phases) = phases {
            spawn_drain_watch(self.app.clone(), phases);
        }
    }
}

pub fn add_service(server: &mut Server, app: Arc<App>) {
    let phases = std::sync::Mutex::new(Some(server.watch_execution_phase()));
    server.add_service(background_service(
        "drain watch",
        DrainWatch { app, phases },
    ));
}

/// `/ready` turns 200 only once the proxy listener accepts connections:
/// Pingora reports its services ready before they have bound.
struct Readiness {
    app: Arc<App>,
    proxy: std::net::SocketAddr,
}

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            if tokio::net::TcpStream::connect(self.proxy).await.is_ok() {
                self.app.ready.store(true, Ordering::SeqCst);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

pub fn add_readiness(server: &mut Server, app: Arc<App>, proxy: std::net::SocketAddr) {
    server.add_service(background_service("readiness", Readiness { app, proxy }));
}

/// Once Pingora has stopped the listeners (its grace period starts), exit
/// the moment the last request finishes instead of sleeping the period out.
fn spawn_drain_watch(app: Arc<App>, mut phases: broadcast::Receiver<ExecutionPhase>) {
    std::thread::Builder::new()
        .name("steadfast-drain".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            let limit = app.runtime().config.server.shutdown_timeout;
            let close_tunnels_at = limit.saturating_sub(TUNNEL_CLOSE_LEAD);
            let mut tunnels_closed = false;
            let start = Instant::now();
            // A connection accepted just before the listener closed is not a
            // request yet (its header is still being read), so one sample of
            // zero proves nothing: require a short quiet window.
            let mut quiet_since: Option<Instant> = None;
            loop {
                let active = crate::gauges::active();
                let quiet = match (active, quiet_since) {
                    (0, None) => {
                        quiet_since = Some(Instant::now());
                        false
                    }
                    (0, Some(t)) => t.elapsed() >= QUIET_WINDOW,
                    _ => {
                        quiet_since = None;
                        false
                    }
                };
                if !tunnels_closed && start.elapsed() >= close_tunnels_at {
                    crate::tunnel::close_all();
                    tunnels_closed = true;
                }
                if quiet || start.elapsed() >= limit {
                    event(Level::Info, "shutdown")
                        .field("mode", "graceful")
                        .field("abandoned_requests", active)
                        .field("drain_ms", start.elapsed().as_millis() as u64)
                        .emit();
                    exit_now(&app, 0);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .ok();
}

/// Leave the process: remove our pid file, flush logs.
pub fn exit_now(app: &App, code: i32) -> ! {
    pidfile::remove_if_ours(&app.runtime().config.server.pid_file);
    crate::otel::flush_at_exit();
    log::logger().flush();
    std::process::exit(code)
}
