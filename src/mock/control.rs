//! The `/_mock/*` control endpoints: stats, reading and swapping the
//! [`Behavior`] over HTTP, and resetting the counters.

use super::bodies::Esc;
use super::server::Conn;
use super::wire::{put_head, Framing, Request};
use super::{reset_counters, Behavior, MockApi};
use serde::Serialize;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

impl Conn {
    pub(super) async fn control(&mut self, req: &Request, path: &str) -> io::Result<()> {
        let shared = self.shared.clone();
        self.body.clear();
        let status = match (req.method.as_str(), path) {
            ("GET", "/_mock/stats") => {
                let api = match shared.api {
                    MockApi::Anthropic => "anthropic",
                    MockApi::OpenAi => "openai",
                };
                let q = shared.recorded.lock().map(|q| q.len()).unwrap_or(0);
                w!(
                    &mut self.body,
                    r#"{{"name":"{}","api":"{}","requests":{},"recorded":{}}}"#,
                    Esc(&shared.name),
                    api,
                    shared.requests.load(Ordering::SeqCst),
                    q
                );
                200
            }
            ("GET", "/_mock/behavior") => {
                let b = shared.behavior();
                json_or_error(&mut self.body, &*b)
            }
            ("POST", "/_mock/behavior") => {
                let parsed = if req.body.iter().all(u8::is_ascii_whitespace) {
                    Ok(Behavior::default())
                } else {
                    serde_json::from_slice::<Behavior>(&req.body).map_err(|e| e.to_string())
                };
                match parsed.and_then(|b| b.validate().map(|()| b)) {
                    Ok(b) => {
                        let status = json_or_error(&mut self.body, &b);
                        *shared.behavior.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(b);
                        status
                    }
                    Err(e) => {
                        w!(&mut self.body, r#"{{"error":"{}"}}"#, Esc(&e));
                        400
                    }
                }
            }
            ("POST", "/_mock/reset") => {
                reset_counters(&shared);
                self.body.extend_from_slice(br#"{"ok":true}"#);
                200
            }
            _ => {
                self.body
                    .extend_from_slice(br#"{"error":"no such control endpoint"}"#);
                404
            }
        };
        let n = shared.requests.load(Ordering::SeqCst);
        self.out.clear();
        put_head(
            &mut self.out,
            status,
            Framing::Length(self.body.len()),
            &shared.name,
            n,
            None,
            req.close,
        );
        if !self.head_only {
            self.out.extend_from_slice(&self.body);
        }
        self.stream.write_all(&self.out).await
    }
}

fn json_or_error<T: Serialize + ?Sized>(w: &mut Vec<u8>, v: &T) -> u16 {
    match serde_json::to_writer(&mut *w, v) {
        Ok(()) => 200,
        Err(e) => {
            w.clear();
            w!(w, r#"{{"error":"{}"}}"#, Esc(&e.to_string()));
            500
        }
    }
}
