//! Attempts on Bedrock and Vertex providers (`kind: bedrock|vertex`): the
//! request built for the cloud ([`crate::cloud::prepare`], after a
//! translation when the route translates), authorised right before it goes
//! (SigV4 over exactly the bytes sent, or a bearer token), and the cloud's
//! answers made Anthropic's: its error answers rewritten and classified by
//! the cloud's error type, and a Bedrock eventstream announced to the
//! client as the SSE it is decoded into ([`super::decode`]).
//!
//! A provider that cannot serve the request's path is skipped like one
//! whose dialect cannot express it; a provider without credentials fails
//! its attempt as `auth` with the reason, without a request going out.

use super::attempts::{describe, Attempts, Outgoing};
use super::Ctx;
use crate::cloud::auth::Credential;
use crate::cloud::request::ResponseFormat;
use crate::cloud::sigv4::Signable;
use crate::cloud::{bedrock, vertex, CloudRequestError};
use crate::headers::{self, UpstreamTarget};
use crate::provider::Provider;
use crate::translate;
use bytes::Bytes;
use http::{HeaderMap, Method};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// What an attempt on a cloud provider carries besides its bytes.
pub(super) struct CloudAttempt {
    pub(super) credential: Credential,
    pub(super) response: ResponseFormat,
    /// No credentials to authorise the request with: the attempt fails as
    /// `auth` with this reason, and nothing is sent.
    pub(super) unavailable: Option<String>,
}

/// An error answer of a cloud, made Anthropic's.
pub(super) struct CloudError {
    /// The status the client sees (Anthropic's for the error's type).
    pub(super) status: u16,
    pub(super) body: Bytes,
}

impl CloudAttempt {
    /// A non-2xx answer in Anthropic's shape, with the status its class
    /// follows from: Bedrock's error type decides (a 400
    /// `ServiceQuotaExceededException` is a rate limit, a 429
    /// `ModelNotReadyException` the server's trouble); Vertex's status
    /// stands and only Google's own error bodies are rewritten.
    pub(super) fn error(&self, status: u16, headers: &HeaderMap, body: &Bytes) -> CloudError {
        match self.credential {
            Credential::Aws { .. } => {
                let errortype = headers
                    .get("x-amzn-errortype")
                    .and_then(|v| v.to_str().ok());
                let e = bedrock::http_error(status, errortype, body);
                CloudError {
                    status: e.status,
                    body: e.body(),
                }
            }
            Credential::Gcp(_) => CloudError {
                status,
                body: vertex::http_error(status, body).1,
            },
        }
    }

    /// A 2xx Bedrock stream goes to the client as the SSE it is decoded
    /// into: its header says so, and has no length (the SSE's differs).
    /// Returns whether the body is an eventstream to decode.
    pub(super) fn stream_head(&self, head: &mut ResponseHeader) -> Result<bool> {
        let eventstream = self.response == ResponseFormat::EventStream
            && head
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains(bedrock::EVENTSTREAM));
        if eventstream {
            head.insert_header(http::header::CONTENT_TYPE, "text/event-stream")?;
            head.remove_header(&http::header::CONTENT_LENGTH);
        }
        Ok(eventstream)
    }
}

impl Attempts<'_> {
    /// The request as a cloud provider takes it. `Err` says why it cannot
    /// take it at all (a path it does not serve, a request its dialect
    /// cannot express): the route goes on without counting an attempt.
    pub(super) fn prepare_cloud(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        p: &Provider,
    ) -> std::result::Result<Outgoing, String> {
        let Some(credential) = p.credential.clone() else {
            return Err(format!(
                "kind {} has no credentials in this process",
                p.settings.kind.as_str()
            ));
        };
        let route = &self.route.settings;
        // A translated request is first made an Anthropic one: then the
        // cloud's own edit applies as to any Anthropic request.
        let plan = if route.translate {
            translate::plan(route.api, p.settings.api, &ctx.rec.path)
        } else {
            translate::Plan::Passthrough
        };
        let (path, client_body, translation) = match plan {
            translate::Plan::Passthrough => (ctx.rec.path.as_str(), self.body.clone(), None),
            translate::Plan::Refuse(why) => return Err(why.to_string()),
            translate::Plan::Translate { path } => {
                let (body, tr) = self.translate_for(ctx, p)?;
                (path, body, Some(tr))
            }
        };
        // The method goes as the client sent it: what is signed is what is
        // sent.
        let method = &req.method;
        let up = crate::cloud::prepare(&p.settings, method, path, &req.headers, &client_body)
            .map_err(|e| match e {
                CloudRequestError::NotServed { .. } => e.to_string(),
                other => format!("cannot be sent to {}: {other}", p.settings.kind.as_str()),
            })?;
        drop(client_body);
        let full_path = format!("{}{}", p.settings.upstream.path_prefix, up.path);
        let (auth, unavailable) = match credential.authorize(&Signable {
            method: method.as_str(),
            host: &p.host_header,
            path: &full_path,
            headers: &up.headers,
            body: &up.body,
        }) {
            Ok(h) => (h, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        // The client's headers that may reach this cloud; none of another
        // dialect's (a translated OpenAI client's organisation, say).
        let drop: Vec<&str> = req
            .headers
            .keys()
            .map(http::HeaderName::as_str)
            .filter(|n| {
                !crate::cloud::forwards_client_header(&p.settings.kind, n)
                    || (translation.is_some() && n.starts_with("openai-"))
            })
            .collect();
        let values: Vec<(&str, &str)> = up
            .headers
            .iter()
            .chain(auth.iter())
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or_default()))
            .collect();
        let target = UpstreamTarget {
            path: Some(&up.path),
            drop: &drop,
            extra: &values,
            drop_credentials: true,
            ..UpstreamTarget::direct(&p.host_header, &p.settings.upstream.path_prefix, None)
        };
        // The attempt's span, named to the provider in `traceparent`.
        let span_id = ctx.rec.trace.as_ref().map_or(0, |_| crate::otel::span_id());
        let trace = ctx.rec.trace.as_ref().map(|tc| tc.propagation(span_id));
        let head = headers::upstream_request_traced(
            req,
            &target,
            &ctx.rec.path,
            &self.strip,
            &ctx.rec.request_id,
            up.body.len(),
            trace.as_ref(),
        )
        .map_err(|e| format!("cannot build the upstream request: {}", describe(&e)))?;
        Ok(Outgoing {
            head,
            body: up.body,
            translation,
            span_id,
            cloud: Some(CloudAttempt {
                credential,
                response: up.response,
                unavailable,
            }),
        })
    }

    /// Whether no provider of the route serves `method path` at all (every
    /// one is a cloud that does not): then the path is not found here.
    pub(super) fn path_served_nowhere(&self, method: &Method, path: &str) -> bool {
        !self.route.providers.is_empty()
            && self
                .route
                .providers
                .iter()
                .all(|p| !crate::cloud::serves(&p.settings.kind, method, path))
    }
}
