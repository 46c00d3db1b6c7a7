//! Neutral block events written as Chat Completions chunks: a role chunk,
//! content and tool-call deltas, a finish chunk, the usage chunk when the
//! client asked for it, and `[DONE]`.

use super::blocks::Open;
use crate::config::Api;
use crate::record::Usage;
use crate::translate::chat::{ChoiceOut, CompletionOut, DeltaOut, FunctionOut, ToolCallOut};
use crate::translate::error::{self, ErrorKind};
use crate::translate::json::sse;
use crate::translate::reply::{self, StopReason};
use crate::translate::ReplyContext;
use bytes::{BufMut, BytesMut};

pub(crate) struct ChatEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// The open tool call's index, counted from 0 over the calls.
    tool: Option<u64>,
    next_tool: u64,
}

impl ChatEncoder {
    pub fn new(ctx: &ReplyContext) -> ChatEncoder {
        ChatEncoder {
            id: String::new(),
            model: String::new(),
            created: ctx.created,
            include_usage: ctx.include_usage,
            tool: None,
            next_tool: 0,
        }
    }

    fn chunk(&self, delta: Option<DeltaOut<'_>>, finish: Option<&'static str>, out: &mut BytesMut) {
        let choice = [ChoiceOut {
            index: 0,
            message: None,
            delta: Some(delta.unwrap_or_default()),
            logprobs: None,
            finish_reason: finish,
        }];
        sse(
            out,
            None,
            &CompletionOut {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: &choice,
                usage: None,
            },
        );
    }

    pub fn start(&mut self, id: &str, model: &str, _usage: &Usage, out: &mut BytesMut) {
        id.clone_into(&mut self.id);
        model.clone_into(&mut self.model);
        self.chunk(
            Some(DeltaOut {
                role: Some("assistant"),
                content: Some(""),
                ..DeltaOut::default()
            }),
            None,
            out,
        );
    }

    pub fn open(&mut self, kind: Open<'_>, out: &mut BytesMut) {
        let Open::Tool { id, name } = kind else {
            return;
        };
        let index = self.next_tool;
        self.next_tool += 1;
        self.tool = Some(index);
        let call = [ToolCallOut {
            index: Some(index),
            id: Some(id),
            kind: Some("function"),
            function: FunctionOut {
                name: Some(name),
                arguments: "",
            },
        }];
        self.chunk(
            Some(DeltaOut {
                tool_calls: &call,
                ..DeltaOut::default()
            }),
            None,
            out,
        );
    }

    pub fn text(&mut self, text: &str, out: &mut BytesMut) {
        self.chunk(
            Some(DeltaOut {
                content: Some(text),
                ..DeltaOut::default()
            }),
            None,
            out,
        );
    }

    pub fn args(&mut self, json: &str, out: &mut BytesMut) {
        let call = [ToolCallOut {
            index: Some(self.tool.unwrap_or(0)),
            id: None,
            kind: None,
            function: FunctionOut {
                name: None,
                arguments: json,
            },
        }];
        self.chunk(
            Some(DeltaOut {
                tool_calls: &call,
                ..DeltaOut::default()
            }),
            None,
            out,
        );
    }

    pub fn close(&mut self, _out: &mut BytesMut) {
        self.tool = None;
    }

    pub fn finish(&mut self, stop: StopReason, usage: &Usage, out: &mut BytesMut) {
        self.chunk(None, Some(stop.chat()), out);
        if self.include_usage {
            sse(
                out,
                None,
                &CompletionOut {
                    id: &self.id,
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &self.model,
                    choices: &[],
                    usage: Some(reply::chat(usage)),
                },
            );
        }
        out.put_slice(b"data: [DONE]\n\n");
    }

    pub fn error(&mut self, kind: ErrorKind, message: &str, out: &mut BytesMut) {
        error::event(Api::OpenAi, kind, message, out);
    }

    /// An SSE comment: keeps idle timers of proxies and clients at bay.
    pub fn keepalive(&mut self, out: &mut BytesMut) {
        out.put_slice(b": ping\n\n");
    }
}
