//! Signals and drain (SPEC §8). Pingora's own SIGTERM handling sleeps a
//! fixed grace period; ours flips `/ready` to 503 at once, keeps accepting
//! for `drain_delay_ms`, then lets Pingora stop the listeners and exits as
//! soon as no request is left (or `shutdown_timeout_ms` has passed).

use crate::app::App;
use crate::logging::event;
use async_trait::async_trait;
use log::Level;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

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
        let rt = self.app.runtime();
        let server = &rt.config.server;
        tokio::select! {
            _ = int.recv() => {
                event(Level::Info, "shutdown").field("signal", "SIGINT").field("mode", "fast").emit();
                ShutdownSignal::FastShutdown
            }
            _ = term.recv() => {
                self.app.draining.store(true, Ordering::SeqCst);
                event(Level::Info, "draining")
                    .field("signal", "SIGTERM")
                    .field("drain_delay_ms", server.drain_delay.as_millis() as u64)
                    .field("inflight", crate::telemetry::active())
                    .emit();
                // Keep accepting while load balancers notice /ready = 503.
                tokio::time::sleep(server.drain_delay).await;
                spawn_exit_when_idle(server.shutdown_timeout);
                ShutdownSignal::GracefulTerminate
            }
            _ = quit.recv() => {
                self.app.draining.store(true, Ordering::SeqCst);
                event(Level::Info, "draining")
                    .field("signal", "SIGQUIT")
                    .field("inflight", crate::telemetry::active())
                    .emit();
                ShutdownSignal::GracefulUpgrade
            }
        }
    }
}

/// After the listeners close, exit the moment the last request finishes,
/// instead of sleeping out Pingora's grace period.
fn spawn_exit_when_idle(limit: Duration) {
    std::thread::spawn(move || {
        let start = Instant::now();
        // Give Pingora a moment to stop accepting before counting.
        std::thread::sleep(Duration::from_millis(50));
        loop {
            let active = crate::telemetry::active();
            if active == 0 || start.elapsed() >= limit {
                event(Level::Info, "shutdown")
                    .field("mode", "graceful")
                    .field("abandoned_requests", active)
                    .field("drain_ms", start.elapsed().as_millis() as u64)
                    .emit();
                log::logger().flush();
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}
