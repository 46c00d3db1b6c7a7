//! Concurrency limits: a global cap on client requests with a
//! bounded wait, and optional per-provider caps.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// A counting limiter whose slots are held for the life of a request.
#[derive(Clone)]
pub struct Limiter {
    sem: Arc<Semaphore>,
    max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No slot freed up within the queue timeout.
    Timeout,
}

impl Limiter {
    pub fn new(max: usize) -> Self {
        Limiter {
            sem: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn in_use(&self) -> usize {
        self.max.saturating_sub(self.sem.available_permits())
    }

    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        match self.sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(TryAcquireError::NoPermits) | Err(TryAcquireError::Closed) => None,
        }
    }

    /// Wait up to `wait` for a slot. Tokio's semaphore is fair (FIFO), so a
    /// queued request is not overtaken by later arrivals. Dropping the
    /// returned future leaves the queue at once, which is how a client that
    /// disconnects while queued gives its place up.
    pub async fn acquire(&self, wait: Duration) -> Result<OwnedSemaphorePermit, Rejected> {
        if let Some(p) = self.try_acquire() {
            return Ok(p);
        }
        match tokio::time::timeout(wait, self.sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            // The semaphore is never closed; treat it like a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(Rejected::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_times_out_when_full() {
        let l = Limiter::new(1);
        let p = l.try_acquire().unwrap();
        assert_eq!(l.in_use(), 1);
        assert_eq!(
            l.acquire(Duration::from_millis(20)).await.err(),
            Some(Rejected::Timeout)
        );
        drop(p);
        assert!(l.acquire(Duration::from_millis(20)).await.is_ok());
    }

    #[tokio::test]
    async fn queued_waiter_gets_the_released_slot() {
        let l = Limiter::new(1);
        let p = l.try_acquire().unwrap();
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire(Duration::from_secs(5)).await.is_ok() });
        tokio::task::yield_now().await;
        drop(p);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn dropping_a_queued_wait_frees_its_place() {
        let l = Limiter::new(1);
        let p = l.try_acquire().unwrap();
        {
            let fut = l.acquire(Duration::from_secs(5));
            // Poll once so it is queued, then abandon it like a client that left.
            let _ = tokio::time::timeout(Duration::from_millis(5), fut).await;
        }
        drop(p);
        assert!(l.try_acquire().is_some());
    }
}
