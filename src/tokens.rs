//! Token usage, read from the response as it passes through: JSON bodies
//! (kept up to a bound and parsed once at the end) and SSE streams (only the
//! events that carry usage are parsed). Nothing here delays the stream.

use crate::config::Api;
use crate::record::Usage;
use crate::sse;
use bytes::{Bytes, BytesMut};
use serde_json::Value;

/// Larger JSON bodies are not kept for usage parsing.
const MAX_JSON: usize = 4 << 20;

pub struct UsageMeter {
    api: Api,
    sse: bool,
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
        } else if !self.json_overflow {
            if self.json.len() + chunk.len() > MAX_JSON {
                self.json_overflow = true;
                self.json = BytesMut::new();
            } else {
                self.json.extend_from_slice(chunk);
            }
        }
    }

    pub fn finish(mut self) -> (Usage, Option<String>) {
        if !self.sse && !self.json.is_empty() {
            if let Ok(v) = serde_json::from_slice::<Value>(&self.json) {
                self.take_model(&v);
                if let Some(u) = v.get("usage") {
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
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match self.api {
            Api::Anthropic => match name.or_else(|| v.get("type").and_then(Value::as_str)) {
                Some("message_start") => {
                    if let Some(m) = v.get("message") {
                        self.take_model(m);
                        if let Some(u) = m.get("usage") {
                            self.apply(u, false);
                        }
                    }
                }
                // Anthropic's message_delta usage is cumulative.
                Some("message_delta") => {
                    if let Some(u) = v.get("usage") {
                        self.apply(u, true);
                    }
                }
                _ => {}
            },
            Api::OpenAi => {
                // Chat chunks carry usage at top level; the Responses API
                // nests it in `response` on response.completed.
                let obj = v.get("response").unwrap_or(&v);
                self.take_model(obj);
                if let Some(u) = obj.get("usage").filter(|u| u.is_object()) {
                    self.apply(u, false);
                }
            }
        }
    }

    fn take_model(&mut self, v: &Value) {
        if self.model.is_none() {
            if let Some(m) = v.get("model").and_then(Value::as_str) {
                self.model = Some(m.to_string());
            }
        }
    }

    /// Merge a usage object. `only_output`: Anthropic's message_delta, whose
    /// input side repeats (or omits) what message_start said.
    fn apply(&mut self, u: &Value, only_output: bool) {
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        let nested = |a: &str, b: &str| u.get(a).and_then(|d| d.get(b)).and_then(Value::as_u64);
        let out = n("output_tokens").or_else(|| n("completion_tokens"));
        if let Some(o) = out {
            self.usage.output = o;
        }
        if only_output {
            return;
        }
        match self.api {
            Api::Anthropic => {
                if let Some(i) = n("input_tokens") {
                    self.usage.input = i;
                }
                if let Some(c) = n("cache_read_input_tokens") {
                    self.usage.cache_read = c;
                }
                if let Some(c) = n("cache_creation_input_tokens") {
                    self.usage.cache_write = c;
                }
            }
            Api::OpenAi => {
                // OpenAI counts cached tokens inside the prompt total; report
                // them separately so input + cache_read = prompt tokens.
                let cached = nested("prompt_tokens_details", "cached_tokens")
                    .or_else(|| nested("input_tokens_details", "cached_tokens"))
                    .unwrap_or(0);
                if let Some(i) = n("prompt_tokens").or_else(|| n("input_tokens")) {
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
