//! From neutral events to well-formed client blocks: one block open at a
//! time, opened before and closed after its deltas, each provider block a
//! client block of its own.
//!
//! Chat Completions never says when a tool call is over; a call is taken as
//! over when its arguments form a complete JSON value and something else
//! begins. Should a provider interleave two calls' arguments, the later
//! call's events wait (in order) until the open one is complete: its
//! arguments are never fragmented across blocks or merged with another's.

use super::to_chat::ChatEncoder;
use super::to_messages::MessagesEncoder;
use super::{Ev, StreamEnd, StreamSummary};
use crate::config::Api;
use crate::record::Usage;
use crate::translate::error::ErrorKind;
use crate::translate::json::JsonEnd;
use crate::translate::reply::StopReason;
use crate::translate::ReplyContext;
use bytes::BytesMut;
use std::collections::VecDeque;

/// A block as the encoders open it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Open<'a> {
    Text,
    Tool { id: &'a str, name: &'a str },
}

pub(crate) enum Encoder {
    Messages(MessagesEncoder),
    Chat(ChatEncoder),
}

macro_rules! enc {
    ($e:expr, $m:ident ( $($a:expr),* )) => {
        match $e {
            Encoder::Messages(x) => x.$m($($a),*),
            Encoder::Chat(x) => x.$m($($a),*),
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Streaming,
    Over(StreamEnd),
}

struct Current {
    key: u64,
    tool: bool,
    json: JsonEnd,
    ended: bool,
}

impl Current {
    fn closable(&self) -> bool {
        !self.tool || self.ended || self.json.complete()
    }
}

/// An event held back while another block is open (owned: it outlives the
/// provider event it came in).
enum Held {
    Text { key: u64, text: String },
    ToolStart { key: u64, id: String, name: String },
    Args { key: u64, json: String },
    End { key: u64 },
}

impl Held {
    fn key(&self) -> u64 {
        match self {
            Held::Text { key, .. }
            | Held::ToolStart { key, .. }
            | Held::Args { key, .. }
            | Held::End { key } => *key,
        }
    }
}

pub(crate) struct Blocks {
    enc: Encoder,
    state: State,
    current: Option<Current>,
    held: VecDeque<Held>,
    /// Tool blocks already closed: late arguments for them are an error.
    closed_tools: Vec<u64>,
    usage: Usage,
    stop: Option<StopReason>,
    pub summary: StreamSummary,
}

impl Blocks {
    pub fn new(client: Api, ctx: &ReplyContext) -> Blocks {
        let enc = match client {
            Api::Anthropic => Encoder::Messages(MessagesEncoder::default()),
            _ => Encoder::Chat(ChatEncoder::new(ctx)),
        };
        Blocks {
            enc,
            state: State::Waiting,
            current: None,
            held: VecDeque::new(),
            closed_tools: Vec::new(),
            usage: Usage::default(),
            stop: None,
            summary: StreamSummary::default(),
        }
    }

    pub fn over(&self) -> bool {
        matches!(self.state, State::Over(_))
    }

    pub fn ev(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        if self.over() {
            return;
        }
        match ev {
            Ev::Start { id, model } => self.start(id, model, out),
            Ev::Keepalive => enc!(&mut self.enc, keepalive(out)),
            Ev::Usage(u) => {
                self.usage = u;
                self.summary.usage = u;
            }
            Ev::Stop(s) => {
                self.stop = Some(s);
                self.summary.stop = Some(s);
            }
            Ev::Done => {
                self.finish(out);
            }
            Ev::Error { kind, message } => self.error(kind, message, out),
            Ev::Text { .. } | Ev::ToolStart { .. } | Ev::Args { .. } | Ev::End { .. } => {
                self.start("", "", out);
                self.block_event(ev, out);
                self.drain(false, out);
            }
        }
    }

    fn start(&mut self, id: &str, model: &str, out: &mut BytesMut) {
        if self.state != State::Waiting {
            return;
        }
        self.state = State::Streaming;
        if !model.is_empty() {
            self.summary.model = Some(model.to_owned());
        }
        enc!(&mut self.enc, start(id, model, &self.usage, out));
    }

    fn error(&mut self, kind: ErrorKind, message: &str, out: &mut BytesMut) {
        self.summary.error = Some(kind);
        enc!(&mut self.enc, error(kind, message, out));
        self.state = State::Over(StreamEnd::Failed);
    }

    /// At the provider's last event, or the clean end of its body.
    pub fn finish(&mut self, out: &mut BytesMut) -> StreamEnd {
        if let State::Over(end) = self.state {
            return end;
        }
        let Some(stop) = self.stop else {
            self.state = State::Over(StreamEnd::Truncated);
            return StreamEnd::Truncated;
        };
        self.start("", "", out);
        self.drain(true, out);
        self.close(out);
        enc!(&mut self.enc, finish(stop, &self.usage, out));
        self.state = State::Over(StreamEnd::Complete);
        StreamEnd::Complete
    }

    fn block_event(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        let cur = self.current.as_ref().map(|c| (c.key, c.tool));
        match ev {
            Ev::Text { key, text } => {
                if cur == Some((key, false)) {
                    enc!(&mut self.enc, text(text, out));
                } else if self.may_switch(key) {
                    self.close(out);
                    self.open(key, Open::Text, out);
                    enc!(&mut self.enc, text(text, out));
                } else {
                    self.held.push_back(Held::Text {
                        key,
                        text: text.to_owned(),
                    });
                }
            }
            Ev::ToolStart { key, id, name } => {
                if self.may_switch(key) {
                    self.close(out);
                    self.open(key, Open::Tool { id, name }, out);
                } else {
                    self.held.push_back(Held::ToolStart {
                        key,
                        id: id.to_owned(),
                        name: name.to_owned(),
                    });
                }
            }
            Ev::Args { key, json } => {
                if cur == Some((key, true)) {
                    if let Some(c) = &mut self.current {
                        c.json.feed(json);
                    }
                    enc!(&mut self.enc, args(json, out));
                } else if self.held.iter().any(|h| h.key() == key) {
                    self.held.push_back(Held::Args {
                        key,
                        json: json.to_owned(),
                    });
                } else if json.trim().is_empty() {
                    // Whitespace after a complete call says nothing.
                } else if self.closed_tools.contains(&key) {
                    self.error(
                        ErrorKind::Server,
                        "the provider sent tool call arguments after the call was complete",
                        out,
                    );
                } else {
                    self.error(
                        ErrorKind::Server,
                        "the provider sent tool call arguments for a call it never opened",
                        out,
                    );
                }
            }
            Ev::End { key } => {
                if cur.is_some_and(|(k, _)| k == key) {
                    if let Some(c) = &mut self.current {
                        c.ended = true;
                    }
                    if self.held.is_empty() {
                        self.close(out);
                    }
                } else if self.held.iter().any(|h| h.key() == key) {
                    self.held.push_back(Held::End { key });
                }
            }
            _ => {}
        }
    }

    /// Whether a block other than the open one may begin now.
    fn may_switch(&self, key: u64) -> bool {
        match &self.current {
            None => !self.held.iter().any(|h| h.key() != key),
            Some(c) => c.key == key && !c.tool || c.closable(),
        }
    }

    fn open(&mut self, key: u64, kind: Open<'_>, out: &mut BytesMut) {
        self.current = Some(Current {
            key,
            tool: matches!(kind, Open::Tool { .. }),
            json: JsonEnd::default(),
            ended: false,
        });
        enc!(&mut self.enc, open(kind, out));
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some(c) = self.current.take() {
            if c.tool {
                self.closed_tools.push(c.key);
            }
            enc!(&mut self.enc, close(out));
        }
    }

    /// Replay held events once the open block may close (or, at the end,
    /// regardless): each held block's own events follow it at once.
    fn drain(&mut self, force: bool, out: &mut BytesMut) {
        while !self.held.is_empty() && !self.over() {
            let closable = self.current.as_ref().is_none_or(|c| force || c.closable());
            if !closable {
                return;
            }
            self.close(out);
            let Some(first) = self.held.pop_front() else {
                return;
            };
            let key = first.key();
            self.replay(first, out);
            // The rest of this block's held events, in order.
            let mut i = 0;
            while i < self.held.len() {
                if self.held[i].key() == key {
                    if let Some(h) = self.held.remove(i) {
                        self.replay(h, out);
                    }
                } else {
                    i += 1;
                }
            }
            if self.current.as_ref().is_some_and(|c| c.ended) {
                self.close(out);
            }
        }
    }

    fn replay(&mut self, h: Held, out: &mut BytesMut) {
        match h {
            Held::Text { key, text } => {
                if self.current.as_ref().is_none_or(|c| c.key != key) {
                    self.close(out);
                    self.open(key, Open::Text, out);
                }
                enc!(&mut self.enc, text(&text, out));
            }
            Held::ToolStart { key, id, name } => {
                self.close(out);
                self.open(
                    key,
                    Open::Tool {
                        id: &id,
                        name: &name,
                    },
                    out,
                );
            }
            Held::Args { json, .. } => {
                if let Some(c) = &mut self.current {
                    c.json.feed(&json);
                }
                enc!(&mut self.enc, args(&json, out));
            }
            Held::End { .. } => {
                if let Some(c) = &mut self.current {
                    c.ended = true;
                }
            }
        }
    }
}
