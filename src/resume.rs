//! Continuing a stream cut mid-answer on another provider
//! (`retry.resume_streams`), as pure policy: what the client has been sent
//! and whether it can be continued ([`Tracker`]), the continuation request
//! (the original one with the text delivered so far as an assistant
//! prefill, [`continuation_body`]), whether a provider refused the prefill
//! ([`prefill_rejected`]), and how the continuation's events are stitched
//! into the open stream so the client sees one message ([`Stitcher`]).
//!
//! Only text can be continued faithfully. A cut inside a tool call, its
//! arguments or a thinking block ends with the usual error event: a
//! prefill cannot carry them. The rare path this serves may use
//! `serde_json::Value`; the hot path only feeds the tracker, which looks
//! at event names and text deltas.

use crate::config::Api;
use crate::sse;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

/// Delivered text beyond which a stream is not continued: the prefill
/// would be a large request of its own, and the tracker must stay bounded.
pub const MAX_DELIVERED: usize = 1 << 20;

/// Shortest overlap at the seam that is trimmed: a shorter one is as
/// likely a coincidence ("e" then "e") as a repetition.
const MIN_OVERLAP: usize = 4;
/// The longest repetition looked for at the seam.
const MAX_OVERLAP: usize = 200;

/// What the client has been sent of a stream, as far as continuing it
/// goes.
#[derive(Debug, Clone)]
pub struct Tracker {
    api: Api,
    /// Text delivered so far, in order.
    delivered: String,
    /// Anthropic: the index and kind of the open content block.
    open: Option<(u64, Kind)>,
    /// Something that cannot be carried by a prefill went out (a tool
    /// call, thinking, a finished message), or the text grew too large.
    spoiled: bool,
    /// Output tokens the provider reported so far (message_start).
    output_tokens: u64,
    /// The Chat chunk id the client has seen.
    chat_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Other,
}

/// Where a cut stream stands, for the continuation and the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub delivered: String,
    /// Index of the open text block (Anthropic).
    pub block: u64,
    pub output_tokens: u64,
    pub chat_id: Option<String>,
}

impl Point {
    /// A rough token count of what was delivered, for the access log
    /// (`resumed_at_tokens`): about four characters a token.
    pub fn tokens_estimate(&self) -> u64 {
        (self.delivered.chars().count() as u64).div_ceil(4)
    }
}

impl Tracker {
    pub fn new(api: Api) -> Tracker {
        Tracker {
            api,
            delivered: String::new(),
            open: None,
            spoiled: !matches!(api, Api::Anthropic | Api::OpenAi),
            output_tokens: 0,
            chat_id: None,
        }
    }

    /// Observe events (whole, as forwarded to the client).
    pub fn observe(&mut self, framed: &[u8]) {
        if self.spoiled {
            return;
        }
        for (name, data) in sse::events(framed) {
            match self.api {
                Api::Anthropic => self.anthropic(name, &data),
                _ => self.chat(&data),
            }
            if self.delivered.len() > MAX_DELIVERED {
                self.spoiled = true;
            }
            if self.spoiled {
                return;
            }
        }
    }

    fn anthropic(&mut self, name: Option<&str>, data: &str) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let ty = name.or(v["type"].as_str()).unwrap_or("");
        match ty {
            "message_start" => {
                if let Some(n) = v["message"]["usage"]["output_tokens"].as_u64() {
                    self.output_tokens = n;
                }
            }
            "content_block_start" => {
                let kind = match v["content_block"]["type"].as_str() {
                    Some("text") => Kind::Text,
                    _ => Kind::Other,
                };
                if kind == Kind::Other {
                    // Text after a tool call or thinking cannot be
                    // continued by a text-only prefill.
                    self.spoiled = true;
                }
                self.open = Some((v["index"].as_u64().unwrap_or(0), kind));
                if let Some(t) = v["content_block"]["text"].as_str() {
                    self.delivered.push_str(t);
                }
            }
            "content_block_delta" => match v["delta"]["type"].as_str() {
                Some("text_delta") => {
                    if let Some(t) = v["delta"]["text"].as_str() {
                        self.delivered.push_str(t);
                    }
                }
                _ => self.spoiled = true,
            },
            "content_block_stop" => self.open = None,
            "message_delta" | "message_stop" => self.spoiled = true,
            _ => {}
        }
    }

    fn chat(&mut self, data: &str) {
        if data.trim() == "[DONE]" {
            self.spoiled = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if self.chat_id.is_none() {
            self.chat_id = v["id"].as_str().map(str::to_string);
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            let d = &c["delta"];
            let has = |k: &str| match &d[k] {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            if has("tool_calls")
                || has("function_call")
                || has("reasoning_content")
                || has("reasoning")
            {
                self.spoiled = true;
            }
            if let Some(t) = d["content"].as_str() {
                self.delivered.push_str(t);
                if !t.is_empty() {
                    self.open = Some((0, Kind::Text));
                }
            }
            if !c["finish_reason"].is_null() {
                self.spoiled = true;
            }
        }
    }

    /// The point to continue from, if the stream broke while text was in
    /// progress and nothing else was sent.
    pub fn point(&self) -> Option<Point> {
        match self.open {
            Some((block, Kind::Text)) if !self.spoiled && !self.delivered.is_empty() => {
                Some(Point {
                    delivered: self.delivered.clone(),
                    block,
                    output_tokens: self.output_tokens,
                    chat_id: self.chat_id.clone(),
                })
            }
            _ => None,
        }
    }
}

/// The original request with the delivered text as the final assistant
/// message. Anthropic refuses a prefill ending in whitespace, so it is
/// trimmed; the seam's overlap trimming takes care of what that shifts.
pub fn continuation_body(api: Api, body: &[u8], delivered: &str) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let prefill = delivered.trim_end();
    if prefill.is_empty() {
        return None;
    }
    let messages = v.get_mut("messages")?.as_array_mut()?;
    let last_is_assistant = messages.last().is_some_and(|m| m["role"] == "assistant");
    if last_is_assistant {
        // The client prefilled already: the delivered text follows it.
        let last = messages.last_mut()?;
        match &mut last["content"] {
            Value::String(s) => s.push_str(prefill),
            Value::Array(blocks) => match api {
                Api::Anthropic => blocks.push(json!({"type": "text", "text": prefill})),
                _ => blocks.push(json!({"type": "text", "text": prefill})),
            },
            other => *other = Value::String(prefill.to_string()),
        }
    } else {
        messages.push(json!({"role": "assistant", "content": prefill}));
    }
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// Whether a 400 says the model does not take an assistant prefill
/// (recent Claude models: "does not support assistant message prefill";
/// "The conversation must end with a user message").
pub fn prefill_rejected(status: u16, body: &[u8]) -> bool {
    if status != 400 {
        return false;
    }
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.contains("prefill")
        || text.contains("must end with a user message")
        || text.contains("final assistant content")
        || text.contains("last message must be")
}

/// The length, in bytes, of the longest overlap to trim: the longest
/// prefix of `next` that `delivered` ends with, if it is long enough to
/// be a repetition and not a coincidence.
pub fn overlap(delivered: &str, next: &str) -> usize {
    let tail_start = delivered
        .char_indices()
        .rev()
        .nth(MAX_OVERLAP.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    let tail = &delivered[tail_start..];
    let mut best = 0;
    for (i, _) in next
        .char_indices()
        .skip(1)
        .chain(std::iter::once((next.len(), ' ')))
    {
        if i > tail.len() {
            break;
        }
        if tail.ends_with(&next[..i]) {
            best = i;
        }
    }
    if next[..best].trim().chars().count() >= MIN_OVERLAP {
        best
    } else {
        0
    }
}

/// Turns a continuation stream into more of the client's open stream: one
/// message, its text the delivered part followed by the continuation.
#[derive(Debug)]
pub struct Stitcher {
    api: Api,
    point: Point,
    /// Continuation text held at the seam until the overlap is decided.
    seam: Option<String>,
    /// Anthropic: the continuation's first content block (dropped: the
    /// client's text block is still open).
    first_block: Option<u64>,
    /// Seam text to hold before deciding: enough to see a repetition.
    seam_len: usize,
    /// Whether a repetition was trimmed at the seam.
    pub trimmed: bool,
    /// Input tokens the continuation's provider reported (its
    /// message_start is not forwarded; the request still billed them).
    pub input_tokens: u64,
}

impl Stitcher {
    pub fn new(api: Api, point: Point) -> Stitcher {
        let seam_len = point.delivered.trim_end().chars().count().min(MAX_OVERLAP);
        Stitcher {
            api,
            point,
            seam: Some(String::new()),
            first_block: None,
            seam_len,
            trimmed: false,
            input_tokens: 0,
        }
    }

    /// One continuation event in; the events the client gets out.
    pub fn push(&mut self, name: Option<&str>, data: &str, out: &mut BytesMut) {
        match self.api {
            Api::Anthropic => self.anthropic(name, data, out),
            _ => self.chat(data, out),
        }
    }

    /// The continuation ended: whatever the seam still holds goes out.
    pub fn finish(&mut self, out: &mut BytesMut) {
        self.flush_seam(out);
    }

    fn anthropic(&mut self, name: Option<&str>, data: &str, out: &mut BytesMut) {
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let ty = name.or(v["type"].as_str()).unwrap_or("").to_string();
        match ty.as_str() {
            "message_start" => {
                self.input_tokens = v["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0)
                    + v["message"]["usage"]["cache_read_input_tokens"]
                        .as_u64()
                        .unwrap_or(0);
            }
            "ping" => {}
            "content_block_start" if self.first_block.is_none() => {
                let idx = v["index"].as_u64().unwrap_or(0);
                self.first_block = Some(idx);
                if v["content_block"]["type"] != "text" {
                    // Not text after all: close the seam, open the block
                    // after the client's text block.
                    self.first_block = Some(u64::MAX);
                    self.flush_seam(out);
                    self.remap(&mut v);
                    anthropic_event(out, &ty, &v);
                }
            }
            "content_block_delta" => {
                let idx = v["index"].as_u64();
                if idx.is_some() && idx == self.first_block && self.seam.is_some() {
                    if let Some(t) = v["delta"]["text"].as_str() {
                        let seam = self.seam.get_or_insert_with(String::new);
                        seam.push_str(t);
                        if !self.may_grow() {
                            self.flush_seam(out);
                        }
                        return;
                    }
                }
                self.flush_seam(out);
                self.remap(&mut v);
                anthropic_event(out, &ty, &v);
            }
            "content_block_stop" | "content_block_start" => {
                self.flush_seam(out);
                self.remap(&mut v);
                anthropic_event(out, &ty, &v);
            }
            "message_delta" => {
                self.flush_seam(out);
                // One message: its output is the delivered part's and the
                // continuation's.
                if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                    v["usage"]["output_tokens"] = json!(n + self.point.output_tokens);
                }
                anthropic_event(out, &ty, &v);
            }
            _ => {
                self.flush_seam(out);
                anthropic_event(out, &ty, &v);
            }
        }
    }

    /// The continuation's block `i` is the client's `open + i` (its first
    /// block continues the open one).
    fn remap(&self, v: &mut Value) {
        if let Some(i) = v["index"].as_u64() {
            let first = self.first_block.filter(|f| *f != u64::MAX).unwrap_or(0);
            let shift = if self.first_block == Some(u64::MAX) {
                1
            } else {
                0
            };
            v["index"] = json!(self.point.block + i.saturating_sub(first) + shift);
        }
    }

    fn chat(&mut self, data: &str, out: &mut BytesMut) {
        if data.trim() == "[DONE]" {
            self.flush_seam(out);
            out.put_slice(b"data: [DONE]\n\n");
            return;
        }
        // Upstream JSON of any shape: only ever written through checked
        // paths (indexing a missing array element would panic).
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if !v.is_object() {
            return;
        }
        if let Some(id) = &self.point.chat_id {
            v["id"] = json!(id);
        }
        let text = v["choices"][0]["delta"]["content"]
            .as_str()
            .map(str::to_string);
        if let Some(obj) = v
            .pointer_mut("/choices/0/delta")
            .and_then(Value::as_object_mut)
        {
            // The client's stream has its role already.
            obj.remove("role");
        }
        let only_text = v["choices"][0]["finish_reason"].is_null()
            && v["choices"][0]["delta"]
                .as_object()
                .is_some_and(|d| d.keys().all(|k| k == "content"));
        match (&mut self.seam, text) {
            (Some(seam), Some(t)) if only_text => {
                seam.push_str(&t);
                if !self.may_grow() {
                    self.flush_seam_chat(out, &v);
                }
            }
            _ => {
                if self.seam.is_some() {
                    self.flush_seam_chat(out, &v);
                }
                let empty = v["choices"][0]["delta"]
                    .as_object()
                    .is_some_and(|d| d.is_empty() || d.get("content") == Some(&json!("")))
                    && v["choices"][0]["finish_reason"].is_null()
                    && v["usage"].is_null();
                if !empty {
                    chat_event(out, &v);
                }
            }
        }
    }

    /// Whether more continuation text could still make the repetition at
    /// the seam longer: only while what is held occurs in the delivered
    /// text's tail. Otherwise it is decided now, so the continuation's
    /// first token is not held back for nothing.
    fn may_grow(&self) -> bool {
        let Some(seam) = &self.seam else {
            return false;
        };
        let delivered = self.point.delivered.as_str();
        let tail_start = delivered
            .char_indices()
            .rev()
            .nth(MAX_OVERLAP.saturating_sub(1))
            .map_or(0, |(i, _)| i);
        seam.chars().count() < self.seam_len && delivered[tail_start..].contains(seam.as_str())
    }

    /// Decide the seam: trim the repetition, send the rest as one text
    /// delta in the client's open block.
    fn flush_seam(&mut self, out: &mut BytesMut) {
        let Some(seam) = self.seam.take() else {
            return;
        };
        let k = overlap(&self.point.delivered, &seam);
        self.trimmed |= k > 0;
        let rest = &seam[k..];
        if rest.is_empty() {
            return;
        }
        match self.api {
            Api::Anthropic => anthropic_event(
                out,
                "content_block_delta",
                &json!({
                    "type": "content_block_delta",
                    "index": self.point.block,
                    "delta": {"type": "text_delta", "text": rest},
                }),
            ),
            _ => {
                let v = json!({
                    "id": self.point.chat_id,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": rest}, "finish_reason": null}],
                });
                chat_event(out, &v);
            }
        }
    }

    fn flush_seam_chat(&mut self, out: &mut BytesMut, template: &Value) {
        let Some(seam) = self.seam.take() else {
            return;
        };
        let k = overlap(&self.point.delivered, &seam);
        self.trimmed |= k > 0;
        let rest = &seam[k..];
        if rest.is_empty() {
            return;
        }
        let mut v = template.clone();
        v["choices"] = json!([{"index": 0, "delta": {"content": rest}, "finish_reason": null}]);
        if v.get("usage").is_some() {
            v["usage"] = Value::Null;
        }
        chat_event(out, &v);
    }
}

fn anthropic_event(out: &mut BytesMut, name: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

fn chat_event(out: &mut BytesMut, data: &Value) {
    out.put_slice(b"data: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, data: &str) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn start() -> String {
        ev(
            "message_start",
            r#"{"type":"message_start","message":{"id":"m1","usage":{"input_tokens":10,"output_tokens":1}}}"#,
        )
    }

    fn block(i: u64, kind: &str) -> String {
        ev(
            "content_block_start",
            &format!(
                r#"{{"type":"content_block_start","index":{i},"content_block":{{"type":"{kind}","text":""}}}}"#
            ),
        )
    }

    fn text(i: u64, t: &str) -> String {
        ev(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":{i},"delta":{{"type":"text_delta","text":{}}}}}"#,
                serde_json::to_string(t).unwrap()
            ),
        )
    }

    fn tracker(events: &[String]) -> Tracker {
        let mut t = Tracker::new(Api::Anthropic);
        t.observe(events.concat().as_bytes());
        t
    }

    #[test]
    fn a_cut_inside_text_can_be_continued_from_what_was_delivered() {
        let t = tracker(&[
            start(),
            block(0, "text"),
            text(0, "The quick"),
            text(0, " brown fox"),
        ]);
        let p = t.point().expect("resumable");
        assert_eq!(p.delivered, "The quick brown fox");
        assert_eq!(p.block, 0);
        assert_eq!(p.output_tokens, 1);
        assert_eq!(p.tokens_estimate(), 5);
    }

    #[test]
    fn tool_calls_thinking_and_finished_messages_are_not_continued() {
        let tool = ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
        );
        assert!(tracker(&[start(), tool]).point().is_none());
        let thinking = ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
        );
        assert!(
            tracker(&[start(), thinking, block(1, "text"), text(1, "x")])
                .point()
                .is_none()
        );
        // Between blocks: nothing is in progress.
        let stop = ev(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        );
        assert!(tracker(&[start(), block(0, "text"), text(0, "hi"), stop])
            .point()
            .is_none());
        // Nothing delivered yet: nothing to continue.
        assert!(tracker(&[start(), block(0, "text")]).point().is_none());
        // Arguments streaming.
        let args = ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
        );
        assert!(tracker(&[start(), block(0, "text"), text(0, "a"), args])
            .point()
            .is_none());
    }

    #[test]
    fn chat_streams_are_tracked_too() {
        let mut t = Tracker::new(Api::OpenAi);
        t.observe(b"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n");
        let p = t.point().unwrap();
        assert_eq!(p.delivered, "Hello");
        assert_eq!(p.chat_id.as_deref(), Some("c1"));
        t.observe(b"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n");
        assert!(t.point().is_none());
        assert!(Tracker::new(Api::OpenAiResponses).point().is_none());
    }

    #[test]
    fn the_continuation_request_ends_with_the_delivered_text() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let c = continuation_body(Api::Anthropic, body, "Hello there \n").unwrap();
        let v: Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(
            v["messages"][1],
            json!({"role": "assistant", "content": "Hello there"})
        );
        assert_eq!(v["stream"], true);
        // A client prefill is extended, not repeated.
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"{"}]}"#;
        let v: Value =
            serde_json::from_slice(&continuation_body(Api::Anthropic, body, "\"a\": 1").unwrap())
                .unwrap();
        assert_eq!(v["messages"][1]["content"], "{\"a\": 1");
        assert!(continuation_body(Api::Anthropic, body, "  ").is_none());
        assert!(continuation_body(Api::Anthropic, b"not json", "x").is_none());
    }

    #[test]
    fn a_refused_prefill_is_recognised() {
        assert!(prefill_rejected(
            400,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill. The conversation must end with a user message."}}"#
        ));
        assert!(!prefill_rejected(
            400,
            br#"{"error":{"message":"max_tokens: too large"}}"#
        ));
        assert!(!prefill_rejected(529, b"prefill"));
    }

    #[test]
    fn only_a_real_repetition_is_trimmed_at_the_seam() {
        assert_eq!(overlap("The quick brown", " brown fox"), " brown".len());
        assert_eq!(overlap("The quick brown", "brown fox"), "brown".len());
        // One letter in common is not a repetition.
        assert_eq!(overlap("a cake", "e and tea"), 0);
        assert_eq!(overlap("Hello", " world"), 0);
        assert_eq!(overlap("", "x"), 0);
        assert_eq!(overlap("naïve café", "café au lait"), "café".len());
    }

    fn stitch(point: Point, events: &[String]) -> (String, Stitcher) {
        let mut s = Stitcher::new(Api::Anthropic, point);
        let mut out = BytesMut::new();
        for e in events {
            for (n, d) in sse::events(e.as_bytes()) {
                s.push(n, &d, &mut out);
            }
        }
        s.finish(&mut out);
        (String::from_utf8(out.to_vec()).unwrap(), s)
    }

    #[test]
    fn the_continuation_becomes_more_of_the_open_text_block() {
        let point = Point {
            delivered: "The quick brown".into(),
            block: 2,
            output_tokens: 5,
            chat_id: None,
        };
        let cont = [
            start(),
            block(0, "text"),
            ev("ping", r#"{"type":"ping"}"#),
            text(0, " brown"),
            text(0, " fox jumps"),
            ev(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            ev(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
            ),
            ev("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let (out, s) = stitch(point, &cont);
        let evs: Vec<(Option<&str>, String)> = sse::events(out.as_bytes()).collect();
        let names: Vec<_> = evs.iter().map(|e| e.0.unwrap()).collect();
        assert_eq!(
            names,
            [
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ],
            "{out}"
        );
        let text: String = evs
            .iter()
            .filter(|e| e.0 == Some("content_block_delta"))
            .map(|e| {
                serde_json::from_str::<Value>(&e.1).unwrap()["delta"]["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(text, " fox jumps", "the repeated ' brown' is trimmed");
        assert!(s.trimmed);
        for (_, d) in &evs[..2] {
            assert_eq!(serde_json::from_str::<Value>(d).unwrap()["index"], 2);
        }
        let usage: Value = serde_json::from_str(&evs[2].1).unwrap();
        assert_eq!(usage["usage"]["output_tokens"], 12);
    }

    #[test]
    fn a_tool_call_after_the_continued_text_gets_the_next_index() {
        let point = Point {
            delivered: "Let me check".into(),
            block: 0,
            output_tokens: 1,
            chat_id: None,
        };
        let tool = ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
        );
        let (out, _) = stitch(point, &[start(), block(0, "text"), text(0, "."), tool]);
        let evs: Vec<(Option<&str>, String)> = sse::events(out.as_bytes()).collect();
        assert_eq!(evs.len(), 2, "{out}");
        let v: Value = serde_json::from_str(&evs[1].1).unwrap();
        assert_eq!(v["index"], 1);
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    /// Continuation events of any shape never panic the stitcher.
    #[test]
    fn odd_json_from_a_provider_is_harmless() {
        for api in [Api::Anthropic, Api::OpenAi] {
            let p = Point {
                delivered: "Hello from".into(),
                block: 0,
                output_tokens: 0,
                chat_id: Some("c".into()),
            };
            let mut s = Stitcher::new(api, p);
            let mut out = BytesMut::new();
            for d in [
                r#"{"id":"x","choices":[],"usage":{"prompt_tokens":1}}"#,
                r#"{"choices":[{"index":0}]}"#,
                r#"{"choices":"no"}"#,
                "[1,2,3]",
                "42",
                "null",
                r#"{"type":"content_block_delta","index":"x"}"#,
                r#"{"type":"message_delta","usage":[1]}"#,
                "[DONE]",
            ] {
                s.push(None, d, &mut out);
                s.push(Some("content_block_delta"), d, &mut out);
            }
            s.finish(&mut out);
            let mut t = Tracker::new(api);
            t.observe(b"data: [1]\n\ndata: 7\n\nevent: content_block_start\ndata: []\n\n");
        }
    }
}
