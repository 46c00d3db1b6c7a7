//! Responses steadfast writes itself: its own errors in the client's
//! dialect, and held upstream responses replayed whole.

use super::{Ctx, Handled};
use crate::config::Api;
use crate::dialect::{self, LocalError};
use crate::headers;
use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Write a whole response (header and body) built by steadfast.
pub(super) async fn write_whole(
    s: &mut Session,
    ctx: &mut Ctx,
    resp: ResponseHeader,
    body: Bytes,
) -> Handled {
    ctx.committed = true;
    if let Err(e) = s
        .write_response_header(Box::new(resp), body.is_empty())
        .await
    {
        return Handled::Abort(e);
    }
    ctx.rec.ttfb = Some(ctx.rec.started.elapsed());
    if !body.is_empty() {
        if let Err(e) = s.write_response_body(Some(body), true).await {
            return Handled::Abort(e);
        }
    }
    Handled::Responded
}

/// Answer with an error of steadfast's own, in the route's dialect.
pub async fn respond_local(
    s: &mut Session,
    ctx: &mut Ctx,
    kind: LocalError,
    message: &str,
    attempts: Option<u32>,
) -> Handled {
    ctx.rec.status = kind.status();
    ctx.rec.class = Some(kind.class());
    if ctx.rec.request_id.is_empty() {
        ctx.rec.request_id = headers::request_id(s.req_header());
    }
    let body = dialect::error_body(ctx.api, kind, message);
    let resp = match local_header(kind, &ctx.rec.request_id, attempts.unwrap_or(0), body.len()) {
        Ok(r) => r,
        Err(e) => return Handled::Abort(e),
    };
    write_whole(s, ctx, resp, body).await
}

/// Answer a bare `GET /` or `HEAD /` that no route claims (see
/// [`crate::routing::is_liveness_probe`]): 200, no provider contacted, a
/// success, so the probes clients send on start do not read as errors.
pub(super) async fn respond_probe(s: &mut Session, ctx: &mut Ctx) -> Handled {
    const BODY: &[u8] = b"steadfast\n";
    ctx.rec.status = 200;
    ctx.rec.class = None;
    let resp = match probe_header(&ctx.rec.request_id, BODY.len()) {
        Ok(r) => r,
        Err(e) => return Handled::Abort(e),
    };
    // HEAD: the same header, no body (RFC 9110 §9.3.2).
    let body = if s.req_header().method == http::Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(BODY)
    };
    write_whole(s, ctx, resp, body).await
}

fn probe_header(request_id: &str, len: usize) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(6))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    headers::stamp(&mut resp, request_id, "none", 0, None)?;
    Ok(resp)
}

/// A whole error response of steadfast's own (header and body), for a
/// writer outside a Pingora session (the connection edge).
pub fn local_error(
    api: Api,
    kind: LocalError,
    message: &str,
    request_id: &str,
) -> Result<(ResponseHeader, Bytes)> {
    let body = dialect::error_body(api, kind, message);
    let resp = local_header(kind, request_id, 0, body.len())?;
    Ok((resp, body))
}

fn local_header(
    kind: LocalError,
    request_id: &str,
    attempts: u32,
    len: usize,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(kind.status(), Some(8))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    if kind == LocalError::Overloaded {
        resp.insert_header(http::header::RETRY_AFTER, "1")?;
    }
    if kind.retry_is_futile() {
        resp.insert_header(headers::X_SHOULD_RETRY, "false")?;
    }
    headers::stamp(
        &mut resp,
        request_id,
        "none",
        attempts,
        Some(kind.class().as_str()),
    )?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_error_headers() {
        let h = local_header(LocalError::Overloaded, "rid", 0, 10).unwrap();
        assert_eq!(h.status.as_u16(), 503);
        assert_eq!(h.headers["retry-after"], "1");
        assert_eq!(h.headers["x-steadfast-error-class"], "concurrency");
        assert_eq!(h.headers["x-steadfast-provider"], "none");
        assert_eq!(h.headers["x-request-id"], "rid");
        // Overload is worth a retry: the SDKs' own policy decides.
        assert!(h.headers.get("x-should-retry").is_none());
        let h = local_header(LocalError::Unauthorized, "rid", 0, 10).unwrap();
        assert_eq!(h.headers["x-should-retry"], "false");
    }

    #[test]
    fn probe_header_is_a_plain_success() {
        let h = probe_header("rid", 10).unwrap();
        assert_eq!(h.status.as_u16(), 200);
        assert_eq!(h.headers["content-length"], "10");
        assert_eq!(h.headers["x-steadfast-provider"], "none");
        assert_eq!(h.headers["x-steadfast-attempts"], "0");
        assert!(h.headers.get("x-steadfast-error-class").is_none());
    }
}
