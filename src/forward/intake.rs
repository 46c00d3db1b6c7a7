//! Taking a request in: reading its body within the limit, waiting for a
//! limiter slot, noticing a client that leaves.

use super::{Ctx, Handled};
use crate::limits::Limiter;
use crate::outcome::ErrorClass;
use crate::telemetry;
use bytes::{Bytes, BytesMut};
use pingora_error::{Error, ErrorType};
use pingora_proxy::Session;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// Resolves when the client closes its connection (or misbehaves) while we
/// wait on something else.
pub(super) async fn client_gone(s: &mut Session) -> Box<Error> {
    loop {
        match s.read_body_or_idle(true).await {
            Err(e) => return e,
            // Extra bytes after the body: the client is pipelining; keep
            // waiting rather than guessing.
            Ok(_) => std::future::pending::<()>().await,
        }
    }
}

pub(super) enum BodyError {
    TooLarge,
    /// The body's framing is broken (bad chunk size, chunk longer than
    /// declared, bad line end): the client's fault, not a departure.
    Malformed,
    Client(Box<Error>),
}

/// Pingora's error types for a request body whose chunked framing is
/// broken (`pingora-core` `protocols::http::v1::body`, not exported).
/// Everything else a body read fails with (`ConnectionClosed`, `ReadError`,
/// `ReadTimedout`) means the client went away or stalled.
const INVALID_CHUNK: ErrorType = ErrorType::new("InvalidChunk");
const INVALID_TRAILER_END: ErrorType = ErrorType::new("InvalidTrailerEnd");

fn body_read_error(e: Box<Error>) -> BodyError {
    if e.etype == INVALID_CHUNK || e.etype == INVALID_TRAILER_END {
        BodyError::Malformed
    } else {
        BodyError::Client(e)
    }
}

/// Read the whole request body, refusing more than `max` bytes.
pub(super) async fn read_body(
    s: &mut Session,
    max: usize,
) -> std::result::Result<Bytes, BodyError> {
    let declared = s
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let expects_continue = s
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        s.write_continue_response()
            .await
            .map_err(BodyError::Client)?;
    }
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(chunk) = s.read_request_body().await.map_err(body_read_error)? {
        let total = buf.len() + first.as_ref().map_or(0, Bytes::len) + chunk.len();
        if total > max {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            // The usual single-chunk body is kept without a copy.
            None if buf.is_empty() => first = Some(chunk),
            prev => {
                if let Some(p) = prev {
                    buf.reserve(declared.map_or(0, |n| n as usize));
                    buf.extend_from_slice(&p);
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

pub(super) enum Slot {
    Rejected,
    ClientGone(Box<Error>),
}

/// A client that leaves while queued for a limiter slot is a limiter
/// give-up (class `concurrency`), not a client-cancelled request:
/// it never got as far as a provider. Nobody is left to send the 503 to.
pub(super) fn left_while_queued(ctx: &mut Ctx, scope: &'static str, e: Box<Error>) -> Handled {
    ctx.rec.class = Some(ErrorClass::Concurrency);
    ctx.rec.rejected_scope = Some(scope);
    telemetry::limiter_rejected(&ctx.rec, scope);
    Handled::Abort(e)
}

/// Take a limiter slot, giving up when the queue timeout passes or the
/// client leaves while queued.
pub(super) async fn acquire(
    s: &mut Session,
    limiter: &Limiter,
    wait: Duration,
) -> std::result::Result<OwnedSemaphorePermit, Slot> {
    if let Some(p) = limiter.try_acquire() {
        return Ok(p);
    }
    tokio::select! {
        r = limiter.acquire(wait) => r.map_err(|_| Slot::Rejected),
        e = client_gone(s) => Err(Slot::ClientGone(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_framing_errors_are_malformed_bodies() {
        for t in [INVALID_CHUNK, INVALID_TRAILER_END] {
            assert!(matches!(
                body_read_error(Error::explain(t, "x")),
                BodyError::Malformed
            ));
        }
        for t in [
            ErrorType::ConnectionClosed,
            ErrorType::ReadError,
            ErrorType::ReadTimedout,
        ] {
            assert!(matches!(
                body_read_error(Error::explain(t, "x")),
                BodyError::Client(_)
            ));
        }
    }
}
