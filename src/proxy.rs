//! The Pingora `ProxyHttp` glue, kept thin: the whole request is served
//! from `request_filter` by [`crate::forward`]; this file maps its result
//! onto Pingora's phases, isolates panics, and feeds the access log.

use crate::app::App;
use crate::dialect::LocalError;
use crate::forward::{self, Ctx, Handled};
use crate::outcome::ErrorClass;
use async_trait::async_trait;
use futures::FutureExt;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

pub struct SteadfastProxy {
    pub app: Arc<App>,
}

#[async_trait]
impl ProxyHttp for SteadfastProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // Never reached: request_filter always answers.
        Error::e_explain(
            ErrorType::InternalError,
            "steadfast answers every request in request_filter",
        )
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let served = AssertUnwindSafe(forward::handle(&self.app, session, ctx))
            .catch_unwind()
            .await;
        match served {
            Ok(Handled::Responded) => Ok(true),
            Ok(Handled::Abort(e)) => Err(e),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                crate::logging::event(log::Level::Error, "panic_recovered")
                    .field("request_id", ctx.rec.request_id.as_str())
                    .field("panic", what)
                    .field("committed", ctx.committed)
                    .emit();
                if ctx.committed {
                    // Mid-response: the only honest thing left is to cut it.
                    ctx.rec.class = Some(ErrorClass::Internal);
                    return Error::e_explain(ErrorType::InternalError, "panic after commit");
                }
                session.set_keepalive(None);
                match forward::respond_local(
                    session,
                    ctx,
                    LocalError::Internal,
                    "internal error in steadfast; the request was not completed",
                    None,
                )
                .await
                {
                    Handled::Responded => Ok(true),
                    Handled::Abort(e) => Err(e),
                }
            }
        }
    }

    async fn fail_to_proxy(
        &self,
        _session: &mut Session,
        _e: &Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        // Every error the request path returns means the client connection
        // is unusable (client gone, or a response deliberately cut): write
        // nothing more and close it.
        // A client that left after the whole answer went out (Codex CLI
        // stops reading at response.completed) is not a failure.
        if ctx.rec.class.is_none() && !ctx.finished {
            ctx.rec.class = Some(ErrorClass::Client);
        }
        FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        // The access log already carries the request's fate with its class.
        true
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        ctx.rec.finished = Some(Instant::now());
        let rt = self.app.runtime();
        crate::telemetry::request_finished(&ctx.rec, &rt.config);
    }

    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        // Never the query string: it can carry keys.
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }
}
