//! Neutral block events written as an Anthropic Messages stream:
//! message_start, (content_block_start, deltas, content_block_stop)*,
//! message_delta, message_stop.

use super::blocks::Open;
use crate::config::Api;
use crate::record::Usage;
use crate::translate::error::{self, ErrorKind};
use crate::translate::json::sse;
use crate::translate::messages::{
    Bare, BlockDelta, BlockOut, BlockStart, BlockStop, DeltaOut, MessageDelta, MessageStart,
    ResponseOut, StopDelta,
};
use crate::translate::reply::{self, StopReason};
use bytes::BytesMut;
use serde_json::value::RawValue;

#[derive(Default)]
pub(crate) struct MessagesEncoder {
    /// Index of the open block, or of the next one.
    index: u64,
}

fn empty_input() -> &'static RawValue {
    static EMPTY: once_cell::sync::Lazy<Box<RawValue>> = once_cell::sync::Lazy::new(|| {
        RawValue::from_string("{}".into()).unwrap_or_else(|_| unreachable!())
    });
    &EMPTY
}

impl MessagesEncoder {
    pub fn start(&mut self, id: &str, model: &str, usage: &Usage, out: &mut BytesMut) {
        // OpenAI reports usage only at the end: input is 0 here, and the
        // final message_delta carries every count.
        let mut u = reply::anthropic(usage);
        u.output_tokens = 0;
        sse(
            out,
            Some("message_start"),
            &MessageStart {
                kind: "message_start",
                message: ResponseOut {
                    id,
                    kind: "message",
                    role: "assistant",
                    model,
                    content: Vec::new(),
                    stop_reason: None,
                    stop_sequence: None,
                    usage: u,
                },
            },
        );
    }

    pub fn open(&mut self, kind: Open<'_>, out: &mut BytesMut) {
        let content_block = match kind {
            Open::Text => BlockOut::Text { text: "" },
            Open::Tool { id, name } => BlockOut::ToolUse {
                id,
                name,
                input: empty_input(),
            },
        };
        sse(
            out,
            Some("content_block_start"),
            &BlockStart {
                kind: "content_block_start",
                index: self.index,
                content_block,
            },
        );
    }

    pub fn text(&mut self, text: &str, out: &mut BytesMut) {
        self.delta(DeltaOut::TextDelta { text }, out);
    }

    pub fn args(&mut self, json: &str, out: &mut BytesMut) {
        self.delta(DeltaOut::InputJsonDelta { partial_json: json }, out);
    }

    fn delta(&mut self, delta: DeltaOut<'_>, out: &mut BytesMut) {
        sse(
            out,
            Some("content_block_delta"),
            &BlockDelta {
                kind: "content_block_delta",
                index: self.index,
                delta,
            },
        );
    }

    pub fn close(&mut self, out: &mut BytesMut) {
        sse(
            out,
            Some("content_block_stop"),
            &BlockStop {
                kind: "content_block_stop",
                index: self.index,
            },
        );
        self.index += 1;
    }

    pub fn finish(&mut self, stop: StopReason, usage: &Usage, out: &mut BytesMut) {
        sse(
            out,
            Some("message_delta"),
            &MessageDelta {
                kind: "message_delta",
                delta: StopDelta {
                    stop_reason: Some(stop.anthropic()),
                    stop_sequence: None,
                },
                usage: reply::anthropic(usage),
            },
        );
        sse(
            out,
            Some("message_stop"),
            &Bare {
                kind: "message_stop",
            },
        );
    }

    pub fn error(&mut self, kind: ErrorKind, message: &str, out: &mut BytesMut) {
        error::event(Api::Anthropic, kind, message, out);
    }

    pub fn keepalive(&mut self, out: &mut BytesMut) {
        sse(out, Some("ping"), &Bare { kind: "ping" });
    }
}
