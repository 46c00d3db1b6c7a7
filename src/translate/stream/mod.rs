//! Streaming translation: a state machine fed the provider's SSE events one
//! whole event at a time, writing whole client events. Nothing is held
//! back beyond what the client dialect's order needs (a Chat stream's
//! usage arrives after its finish reason, so the closing Messages events
//! wait for it), and no event is buffered whole-stream.
//!
//! Inside, each provider dialect has a decoder (its events to neutral
//! [`Ev`]s), [`blocks::Blocks`] turns those into well-formed blocks (one
//! open at a time, tool calls kept apart by index, nothing fragmented or
//! merged), and each client dialect has an encoder.

mod blocks;
mod from_chat;
mod from_messages;
mod from_responses;
mod to_chat;
mod to_messages;

use super::error::ErrorKind;
use super::reply::StopReason;
use super::{Notes, ReplyContext};
use crate::config::Api;
use crate::record::Usage;
use bytes::BytesMut;

/// A neutral stream event, borrowed from the provider's event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ev<'a> {
    Start {
        id: &'a str,
        model: &'a str,
    },
    /// Text for the block the provider calls `key`.
    Text {
        key: u64,
        text: &'a str,
    },
    ToolStart {
        key: u64,
        id: &'a str,
        name: &'a str,
    },
    Args {
        key: u64,
        json: &'a str,
    },
    /// The provider closed block `key`.
    End {
        key: u64,
    },
    Keepalive,
    /// Usage so far (each one replaces the last).
    Usage(Usage),
    Stop(StopReason),
    /// The provider's own last event.
    Done,
    Error {
        kind: ErrorKind,
        message: &'a str,
    },
}

/// How a translated stream ended, from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The client got its dialect's closing events.
    Complete,
    /// The provider's stream stopped before its end; nothing closing was
    /// written (the request path appends its own error event).
    Truncated,
    /// An error event was written; the stream is over.
    Failed,
}

/// What the translator learned from the stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSummary {
    pub usage: Usage,
    pub model: Option<String>,
    pub stop: Option<StopReason>,
    /// The kind of the provider's error event, when there was one.
    pub error: Option<ErrorKind>,
    pub notes: Notes,
}

enum Decoder {
    Chat(from_chat::Decoder),
    Messages(from_messages::Decoder),
    Responses(from_responses::Decoder),
}

/// Translates one response stream from `upstream`'s dialect to
/// `client`'s.
pub struct StreamTranslator {
    decoder: Decoder,
    blocks: blocks::Blocks,
}

impl StreamTranslator {
    pub fn new(upstream: Api, client: Api, ctx: &ReplyContext) -> StreamTranslator {
        let decoder = match upstream {
            Api::Anthropic => Decoder::Messages(from_messages::Decoder::default()),
            Api::OpenAi => Decoder::Chat(from_chat::Decoder::default()),
            Api::OpenAiResponses => Decoder::Responses(from_responses::Decoder::default()),
        };
        StreamTranslator {
            decoder,
            blocks: blocks::Blocks::new(client, ctx),
        }
    }

    /// One whole provider event: its `event:` name, if any, and its data
    /// (lines joined). Writes whatever client events it completes.
    pub fn push(&mut self, name: Option<&str>, data: &str, out: &mut BytesMut) {
        if self.blocks.over() {
            return;
        }
        let blocks = &mut self.blocks;
        let mut sink = |ev: Ev<'_>| blocks.ev(ev, out);
        match &mut self.decoder {
            Decoder::Chat(d) => d.decode(data, &mut sink),
            Decoder::Messages(d) => d.decode(name, data, &mut sink),
            Decoder::Responses(d) => d.decode(name, data, &mut sink),
        }
        let notes = match &mut self.decoder {
            Decoder::Chat(d) => std::mem::take(&mut d.notes),
            Decoder::Messages(d) => std::mem::take(&mut d.notes),
            Decoder::Responses(d) => std::mem::take(&mut d.notes),
        };
        for n in notes.as_slice() {
            self.blocks.summary.notes.add(*n);
        }
    }

    /// At the clean end of the provider's body. A provider that said how
    /// it stopped but left out its very last event (`[DONE]`) still gets
    /// its stream closed for the client.
    pub fn finish(&mut self, out: &mut BytesMut) -> StreamEnd {
        self.blocks.finish(out)
    }

    /// Whether the client has had its dialect's last event (closing or
    /// error): what follows is nothing to it.
    pub fn over(&self) -> bool {
        self.blocks.over()
    }

    pub fn summary(&self) -> &StreamSummary {
        &self.blocks.summary
    }
}

#[cfg(test)]
mod tests;
