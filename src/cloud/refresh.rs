//! A credential kept fresh in the background: fetched by a task before it
//! expires, read by the request path with one atomic load.
//!
//! The request path never waits for a credential service: [`Refreshed::
//! current`] hands out what is held, or nothing (an attempt that then fails
//! as `auth` and moves on). The refresh loop ([`Refreshed::run`]) fetches at
//! start, again ahead of expiry, with backoff after failures, and at once
//! (but not more than every few seconds) when asked by
//! [`Refreshed::refresh_soon`], e.g. after a cloud said the credential
//! expired. [`Refreshed::status`] is what `/health` reports; its reasons
//! never hold a secret.

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Notify};

/// Refresh this long before expiry (or at half the lifetime, if shorter).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);
/// A credential without an expiry (static keys) is fetched again this
/// often, so a rotated profile file or secret is picked up.
pub const STATIC_RECHECK: Duration = Duration::from_secs(15 * 60);
/// Never fetch more often than this, whatever asks for it.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Backoff after failed fetches: from 1 s, doubling, up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// One fetch may take this long; a credential service that hangs must not
/// stall the loop.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest failure reason kept for `/health`.
const MAX_REASON: usize = 300;

/// What a credential source hands back.
pub struct Fetched<T> {
    pub value: T,
    /// When it stops working; `None` for static credentials.
    pub expires_at: Option<SystemTime>,
}

/// Where a credential comes from: the AWS chain, Google's ADC, a test fake.
#[async_trait]
pub trait Source: Send + Sync {
    type Value: Send + Sync + 'static;
    /// A fresh credential, or why none could be had. The reason is shown
    /// to operators: it must not contain the credential or any secret.
    async fn fetch(&self) -> Result<Fetched<Self::Value>, String>;
}

/// Whether a provider's credentials can be had right now (`/health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialStatus {
    /// The first fetch has not finished yet.
    Pending,
    Ready,
    /// No usable credential; the reason, free of secrets.
    Unavailable(String),
}

impl CredentialStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialStatus::Pending => "pending",
            CredentialStatus::Ready => "ready",
            CredentialStatus::Unavailable(_) => "unavailable",
        }
    }
}

struct Held<T> {
    value: Arc<T>,
    expires_at: Option<SystemTime>,
}

/// The current credential of one source, and the state of its refreshing.
pub struct Refreshed<T> {
    held: ArcSwapOption<Held<T>>,
    status: watch::Sender<CredentialStatus>,
    wake: Notify,
    running: AtomicBool,
}

impl<T: Send + Sync + 'static> Default for Refreshed<T> {
    fn default() -> Self {
        Refreshed {
            held: ArcSwapOption::empty(),
            status: watch::channel(CredentialStatus::Pending).0,
            wake: Notify::new(),
            running: AtomicBool::new(false),
        }
    }
}

impl<T: Send + Sync + 'static> Refreshed<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The credential to use now: `None` before the first fetch and once
    /// the held one has expired.
    pub fn current(&self) -> Option<Arc<T>> {
        let held = self.held.load();
        let h = held.as_ref()?;
        match h.expires_at {
            Some(t) if t <= SystemTime::now() => None,
            _ => Some(h.value.clone()),
        }
    }

    pub fn status(&self) -> CredentialStatus {
        let s = self.status.borrow().clone();
        if s == CredentialStatus::Ready && self.current().is_none() {
            return CredentialStatus::Unavailable("credentials expired; refreshing".into());
        }
        s
    }

    /// Status updates, for whoever must wait for the first fetch.
    pub fn watch(&self) -> watch::Receiver<CredentialStatus> {
        self.status.subscribe()
    }

    /// Ask for a fetch now (rate-limited to one per [`MIN_INTERVAL`]).
    pub fn refresh_soon(&self) {
        self.wake.notify_one();
    }

    /// The refresh loop, until `shutdown` turns true or its sender goes.
    /// Meant for a background service; a second concurrent call returns at
    /// once, so starting it twice cannot double the traffic.
    pub async fn run<S: Source<Value = T>>(&self, source: S, mut shutdown: watch::Receiver<bool>) {
        if self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut failures = 0u32;
        loop {
            let started = tokio::time::Instant::now();
            let fetched = match tokio::time::timeout(FETCH_TIMEOUT, source.fetch()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())),
            };
            let delay = match fetched {
                Ok(f) => {
                    failures = 0;
                    let left = f
                        .expires_at
                        .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default());
                    self.held.store(Some(Arc::new(Held {
                        value: Arc::new(f.value),
                        expires_at: f.expires_at,
                    })));
                    self.status.send_replace(CredentialStatus::Ready);
                    refresh_delay(left)
                }
                Err(reason) => {
                    failures = failures.saturating_add(1);
                    let reason = super::truncate(&reason, MAX_REASON).to_string();
                    if self.current().is_some() {
                        log::warn!(
                            "credential refresh failed, the current ones still work: {reason}"
                        );
                    } else {
                        log::warn!("credentials unavailable: {reason}");
                        self.status
                            .send_replace(CredentialStatus::Unavailable(reason));
                    }
                    retry_delay(failures)
                }
            };
            let next = started + delay.max(MIN_INTERVAL);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.wake.notified() => {
                    // Asked early: still no more than one fetch per interval.
                    tokio::time::sleep_until(started + MIN_INTERVAL).await;
                }
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                break;
            }
        }
        self.running.store(false, Ordering::SeqCst);
    }
}

/// When to fetch again after a success, given how long the credential has
/// left (`None`: it does not expire).
pub fn refresh_delay(left: Option<Duration>) -> Duration {
    match left {
        None => STATIC_RECHECK,
        Some(left) => {
            let ahead = REFRESH_AHEAD.min(left / 2);
            left.saturating_sub(ahead).max(MIN_INTERVAL)
        }
    }
}

/// When to try again after `failures` failed fetches in a row.
pub fn retry_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Mutex;

    #[test]
    fn refresh_comes_ahead_of_expiry() {
        let m = |s: u64| Duration::from_secs(60 * s);
        assert_eq!(refresh_delay(Some(m(60))), m(55));
        assert_eq!(refresh_delay(Some(m(6))), m(3));
        assert_eq!(refresh_delay(Some(Duration::from_secs(2))), MIN_INTERVAL);
        assert_eq!(refresh_delay(None), STATIC_RECHECK);
        let s = Duration::from_secs;
        assert_eq!(
            (1..=8).map(retry_delay).collect::<Vec<_>>(),
            [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60)]
        );
        assert_eq!(retry_delay(u32::MAX), MAX_BACKOFF);
    }

    /// A source that answers from a script: `Ok(lifetime)` or `Err`.
    struct Script {
        answers: Mutex<Vec<Result<Option<Duration>, String>>>,
        calls: Arc<AtomicU32>,
    }

    #[async_trait]
    impl Source for Script {
        type Value = u32;
        async fn fetch(&self) -> Result<Fetched<u32>, String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let next = {
                let mut a = self.answers.lock().unwrap();
                if a.len() > 1 {
                    a.remove(0)
                } else {
                    a[0].clone()
                }
            };
            next.map(|life| Fetched {
                value: n,
                expires_at: life.map(|l| SystemTime::now() + l),
            })
        }
    }

    fn script(answers: Vec<Result<Option<Duration>, String>>) -> (Script, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        (
            Script {
                answers: Mutex::new(answers),
                calls: calls.clone(),
            },
            calls,
        )
    }

    async fn until(cell: &Refreshed<u32>, want: impl Fn(&CredentialStatus) -> bool) {
        let mut w = cell.watch();
        w.wait_for(|s| want(s)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn fetches_at_start_and_again_before_expiry() {
        let cell = Arc::new(Refreshed::<u32>::new());
        let hour = Duration::from_secs(3600);
        let (src, calls) = script(vec![Ok(Some(hour))]);
        let (stop, shutdown) = watch::channel(false);
        assert_eq!(cell.status(), CredentialStatus::Pending);
        assert!(cell.current().is_none());
        let task = tokio::spawn({
            let cell = cell.clone();
            async move { cell.run(src, shutdown).await }
        });
        until(&cell, |s| *s == CredentialStatus::Ready).await;
        assert_eq!(cell.current().as_deref(), Some(&1));
        // 55 minutes later (paused clock): the second fetch.
        tokio::time::sleep(Duration::from_secs(55 * 60 + 1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cell.current().as_deref(), Some(&2));
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_report_a_reason_until_a_fetch_works() {
        let cell = Arc::new(Refreshed::<u32>::new());
        let (src, calls) = script(vec![
            Err("no credentials in the chain".into()),
            Err("still none".into()),
            Ok(None),
        ]);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn({
            let cell = cell.clone();
            async move { cell.run(src, shutdown).await }
        });
        until(&cell, |s| matches!(s, CredentialStatus::Unavailable(_))).await;
        assert_eq!(
            cell.status(),
            CredentialStatus::Unavailable("no credentials in the chain".into())
        );
        assert!(cell.current().is_none());
        until(&cell, |s| *s == CredentialStatus::Ready).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(cell.current().as_deref(), Some(&3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_working_credentials_and_asks_are_rate_limited() {
        let cell = Arc::new(Refreshed::<u32>::new());
        let (src, calls) = script(vec![
            Ok(Some(Duration::from_secs(3600))),
            Err("sts down".into()),
        ]);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn({
            let cell = cell.clone();
            async move { cell.run(src, shutdown).await }
        });
        until(&cell, |s| *s == CredentialStatus::Ready).await;
        // Asked ten times at once: one more fetch, after MIN_INTERVAL.
        for _ in 0..10 {
            cell.refresh_soon();
        }
        tokio::time::sleep(MIN_INTERVAL + Duration::from_millis(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            cell.status(),
            CredentialStatus::Ready,
            "the held ones still work"
        );
        assert_eq!(cell.current().as_deref(), Some(&1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_loop_does_not_start() {
        let cell = Arc::new(Refreshed::<u32>::new());
        let (src, _) = script(vec![Ok(None)]);
        let (src2, calls2) = script(vec![Ok(None)]);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn({
            let cell = cell.clone();
            let shutdown = shutdown.clone();
            async move { cell.run(src, shutdown).await }
        });
        until(&cell, |s| *s == CredentialStatus::Ready).await;
        cell.run(src2, shutdown).await;
        assert_eq!(calls2.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_source_times_out() {
        struct Hang;
        #[async_trait]
        impl Source for Hang {
            type Value = u32;
            async fn fetch(&self) -> Result<Fetched<u32>, String> {
                std::future::pending().await
            }
        }
        let cell = Arc::new(Refreshed::<u32>::new());
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn({
            let cell = cell.clone();
            async move { cell.run(Hang, shutdown).await }
        });
        until(&cell, |s| matches!(s, CredentialStatus::Unavailable(_))).await;
        assert!(
            matches!(cell.status(), CredentialStatus::Unavailable(r) if r.contains("no answer"))
        );
    }

    #[test]
    fn expired_credentials_are_not_handed_out() {
        let cell = Refreshed::<u32>::new();
        cell.held.store(Some(Arc::new(Held {
            value: Arc::new(7),
            expires_at: Some(SystemTime::now() - Duration::from_secs(1)),
        })));
        cell.status.send_replace(CredentialStatus::Ready);
        assert!(cell.current().is_none());
        assert!(matches!(cell.status(), CredentialStatus::Unavailable(_)));
    }
}
