//! Token usage, read from the response as it passes through: JSON bodies
//! (kept up to a bound and parsed once at the end) and SSE streams (only the
//! events that carry usage are parsed). Nothing here delays the stream.
//!
//! Parsing is typed and borrow-only: serde skips every field but `model` and
//! `usage`, so a chat completion costs a scan, not a JSON tree.

use crate::config::Api;
use crate::record::Usage;
use crate::sse;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use std::borrow::Cow;

/// Larger JSON bodies are not kept for usage parsing.
const MAX_JSON: usize = 4 << 20;

/// The parts of a response body or SSE event that can carry usage: the top
/// level (Anthropic messages, OpenAI chat), `message` (Anthropic
/// message_start) and `response` (OpenAI Responses API events).
#[derive(Deserialize, Default)]
struct Doc<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(borrow, default)]
    message: Option<Box<Doc<'a>>>,
    #[serde(borrow, default)]
    response: Option<Box<Doc<'a>>>,
}

/// Every usage field either dialect uses; absent ones stay `None`.
#[derive(Deserialize, Default)]
struct RawUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<Cached>,
    input_tokens_details: Option<Cached>,
}

#[derive(Deserialize, Default)]
struct Cached {
    cached_tokens: Option<u64>,
}

pub struct UsageMeter {
    api: Api,
    sse: bool,
    /// A JSON body that arrived in one chunk is kept without a copy.
    first: Option<Bytes>,
    json: BytesMut,
    json_overflow: bool,
    usage: Usage,
    model: Option<String>,
}

impl UsageMeter {
    pub fn new(api: Api, sse: bool) -> Self {
        UsageMeter {
            api,
            sse,
            first: None,
            json: BytesMut::new(),
            json_overflow: false,
            usage: Usage::default(),
            model: None,
        }
    }

    /// Observe forwarded bytes. For SSE these are whole events (see
    /// [`crate::sse::SseFramer`]).
    pub fn feed(&mut self, chunk: &Bytes) {
        if self.sse {
            if !might_carry_usage(chunk) {
                return;
            }
            for (name, data) in sse::events(chunk) {
                self.on_event(name, &data);
            }
            return;
        }
        if self.json_overflow {
            return;
        }
        let held = self.first.as_ref().map_or(0, Bytes::len) + self.json.len();
        if held + chunk.len() > MAX_JSON {
            self.json_overflow = true;
            self.first = None;
            self.json = BytesMut::new();
            return;
        }
        match self.first.take() {
            None if self.json.is_empty() => self.first = Some(chunk.clone()),
            prev => {
                if let Some(p) = prev {
                    self.json.extend_from_slice(&p);
                }
                self.json.extend_from_slice(chunk);
            }
        }
    }

    pub fn finish(mut self) -> (Usage, Option<String>) {
        if !self.sse {
            let body = self
                .first
                .take()
                .unwrap_or_else(|| self.json.split().freeze());
            if let Ok(doc) = serde_json::from_slice::<Doc>(&body) {
                self.take_model(&doc);
                if let Some(u) = &doc.usage {
                    self.apply(u, false);
                }
            }
        }
        (self.usage, self.model)
    }

    fn on_event(&mut self, name: Option<&str>, data: &str) {
        if data == "[DONE]" || !data.contains("usage") && !data.contains("\"model\"") {
            return;
        }
        let Ok(doc) = serde_json::from_str::<Doc>(data) else {
            return;
        };
        match self.api {
            Api::Anthropic => match name.or(doc.kind.as_deref()) {
                Some("message_start") => {
                    if let Some(m) = &doc.message {
                        self.take_model(m);
                        if let Some(u) = &m.usage {
                            self.apply(u, false);
                        }
                    }
                }
                // Anthropic's message_delta usage is cumulative.
                Some("message_delta") => {
                    if let Some(u) = &doc.usage {
                        self.apply(u, true);
                    }
                }
                _ => {}
            },
            Api::OpenAi | Api::OpenAiResponses => {
                // Chat chunks carry usage at top level; the Responses API
                // nests it in `response` on response.completed.
                let obj = doc.response.as_deref().unwrap_or(&doc);
                self.take_model(obj);
                if let Some(u) = &obj.usage {
                    self.apply(u, false);
                }
            }
        }
    }

    fn take_model(&mut self, doc: &Doc) {
        if self.model.is_none() {
            if let Some(m) = &doc.model {
                self.model = Some(m.to_string());
            }
        }
    }

    /// Merge a usage object. `only_output`: Anthropic's message_delta, whose
    /// input side repeats (or omits) what message_start said.
    fn apply(&mut self, u: &RawUsage, only_output: bool) {
        if let Some(o) = u.output_tokens.or(u.completion_tokens) {
            self.usage.output = o;
        }
        if only_output {
            return;
        }
        match self.api {
            Api::Anthropic => {
                if let Some(i) = u.input_tokens {
                    self.usage.input = i;
                }
                if let Some(c) = u.cache_read_input_tokens {
                    self.usage.cache_read = c;
                }
                if let Some(c) = u.cache_creation_input_tokens {
                    self.usage.cache_write = c;
                }
            }
            Api::OpenAi | Api::OpenAiResponses => {
                // OpenAI counts cached tokens inside the prompt total; report
                // them separately so input + cache_read = prompt tokens.
                let cached = u
                    .prompt_tokens_details
                    .as_ref()
                    .or(u.input_tokens_details.as_ref())
                    .and_then(|c| c.cached_tokens)
                    .unwrap_or(0);
                if let Some(i) = u.prompt_tokens.or(u.input_tokens) {
                    self.usage.input = i.saturating_sub(cached);
                    self.usage.cache_read = cached;
                }
            }
        }
    }
}

/// Cheap pre-filter so most stream chunks are not parsed at all.
fn might_carry_usage(chunk: &[u8]) -> bool {
    chunk.windows(5).any(|w| w == b"usage")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_stream_usage() {
        let mut m = UsageMeter::new(Api::Anthropic, true);
        m.feed(&Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":3,\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\n\n",
        ));
        m.feed(&Bytes::from_static(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage\"}}\n\n",
        ));
        m.feed(&Bytes::from_static(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
        ));
        let (u, model) = m.finish();
        assert_eq!(
            u,
            Usage {
                input: 25,
                output: 15,
                cache_read: 3,
                cache_write: 2
            }
        );
        assert_eq!(model.as_deref(), Some("claude-x"));
    }

    #[test]
    fn anthropic_json_usage() {
        let mut m = UsageMeter::new(Api::Anthropic, false);
        m.feed(&Bytes::from_static(
            b"{\"model\":\"c\",\"usage\":{\"input_tokens\":11,",
        ));
        m.feed(&Bytes::from_static(b"\"output_tokens\":7}}"));
        let (u, _) = m.finish();
        assert_eq!((u.input, u.output), (11, 7));
    }

    #[test]
    fn openai_stream_usage_chunk() {
        let mut m = UsageMeter::new(Api::OpenAi, true);
        m.feed(&Bytes::from_static(
            b"data: {\"model\":\"gpt\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
        ));
        m.feed(&Bytes::from_static(
            b"data: {\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\ndata: [DONE]\n\n",
        ));
        let (u, model) = m.finish();
        assert_eq!(
            u,
            Usage {
                input: 12,
                output: 5,
                cache_read: 8,
                cache_write: 0
            }
        );
        assert_eq!(model.as_deref(), Some("gpt"));
    }

    #[test]
    fn openai_responses_api_completed_event() {
        let mut m = UsageMeter::new(Api::OpenAi, true);
        m.feed(&Bytes::from_static(
            b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"o\",\"usage\":{\"input_tokens\":9,\"output_tokens\":4}}}\n\n",
        ));
        let (u, _) = m.finish();
        assert_eq!((u.input, u.output), (9, 4));
    }

    #[test]
    fn single_chunk_json_is_not_copied_and_unknown_fields_are_skipped() {
        let mut m = UsageMeter::new(Api::OpenAi, false);
        let body = Bytes::from_static(
            b"{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"usage \\\"quoted\\\"\"}}],\"model\":\"gpt\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}",
        );
        m.feed(&body);
        assert_eq!(m.first.as_ref().map(|b| b.as_ptr()), Some(body.as_ptr()));
        let (u, model) = m.finish();
        assert_eq!((u.input, u.output), (3, 4));
        assert_eq!(model.as_deref(), Some("gpt"));
    }

    #[test]
    fn non_json_and_oversized_bodies_are_ignored() {
        let mut m = UsageMeter::new(Api::OpenAi, false);
        m.feed(&Bytes::from_static(b"<html>"));
        assert!(m.finish().0.is_empty());
        let mut m = UsageMeter::new(Api::OpenAi, false);
        m.feed(&Bytes::from(vec![b' '; MAX_JSON + 1]));
        m.feed(&Bytes::from_static(b"{\"usage\":{\"prompt_tokens\":1}}"));
        assert!(m.finish().0.is_empty());
    }
}
