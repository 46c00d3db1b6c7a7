//! Process-wide gauges: client requests in flight (and their peak),
//! requests anywhere in the request path (what a drain waits for), and the
//! resident memory. The request path moves them; `/health`, `/stats` and
//! `/metrics` read them. Nothing here depends on any other module, so
//! every sink can read it without the sinks depending on each other.

use std::sync::atomic::{AtomicUsize, Ordering};

static INFLIGHT: AtomicUsize = AtomicUsize::new(0);
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK_INFLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Requests anywhere in the request path, queued ones included: what a
/// drain waits for.
pub fn active() -> usize {
    ACTIVE.load(Ordering::Relaxed)
}

pub struct ActiveGuard(());

impl ActiveGuard {
    pub fn new() -> Self {
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(())
    }
}

impl Default for ActiveGuard {
    fn default() -> Self {
        ActiveGuard::new()
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Client requests holding a global limiter slot right now.
pub fn inflight() -> usize {
    INFLIGHT.load(Ordering::Relaxed)
}

/// Counts a request as in flight for as long as it lives.
pub struct InflightGuard(());

impl InflightGuard {
    pub fn new() -> Self {
        let now = INFLIGHT.fetch_add(1, Ordering::Relaxed) + 1;
        PEAK_INFLIGHT.fetch_max(now, Ordering::Relaxed);
        InflightGuard(())
    }
}

impl Default for InflightGuard {
    fn default() -> Self {
        InflightGuard::new()
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        INFLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The most requests that held a global limiter slot at once.
pub fn peak_inflight() -> usize {
    PEAK_INFLIGHT.load(Ordering::Relaxed).max(inflight())
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Linux pages are 4 KiB on every platform steadfast targets.
    pages * 4096
}

/// The kernel's own high-water mark of the resident set (VmHWM), exact and
/// free to read at scrape time; 0 where /proc is not available.
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
