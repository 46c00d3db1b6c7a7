//! Cross-dialect translation (`routes[].translate`): a client's request in
//! one API dialect sent to a provider that speaks another, and the answer
//! translated back. Pure functions and a per-stream state machine; no I/O.
//!
//! Directions: Anthropic Messages → OpenAI Chat Completions, Messages →
//! OpenAI Responses, Chat Completions → Messages, and each answer back.
//!
//! What the request path calls:
//! - per attempt, [`plan`]: send unchanged, translate (to which path), or
//!   refuse the attempt as class `request`;
//! - [`translate_request`]: the body for the provider, the notes to log,
//!   and a [`ReplyContext`] the response side needs;
//! - on a 2xx JSON answer, [`translate_response`]; on an SSE answer, one
//!   [`StreamTranslator`] fed whole upstream events; on an error status,
//!   [`translate_error`].
//!
//! What translation preserves: system prompts, multi-turn history, text,
//! images (base64 and URL), PDF documents (base64), tool definitions,
//! `tool_choice`, parallel-call control, tool calls and their results,
//! streamed tool-call arguments delta for delta, stop reasons, usage
//! (cache reads, and cache writes counted into OpenAI's prompt tokens),
//! `max_tokens`, temperature, top_p, stop sequences, the end user id,
//! and the request for thinking/reasoning (as a budget or an effort).
//!
//! What it drops, with a note: prompt-caching markers (the cache does not
//! carry across vendors), thinking text and signatures from history (a
//! signature is never replayed to, or invented for, another vendor),
//! thinking or reasoning output that has no signed equivalent in the
//! client's dialect, `top_k`, sampling knobs the target lacks, and
//! `is_error` on tool results (the text stays).
//!
//! What it refuses ([`Untranslatable`], class `request`, the route goes on
//! to its next provider): features the request depends on that the target
//! lacks (server tools, `n > 1`, structured output, audio, more stop
//! sequences than the target takes, ...).

mod error;
mod json;
mod reply;
mod request;
mod response;
mod stream;

pub mod chat;
pub mod messages;
pub mod responses;

pub use error::{translate_error, ErrorKind};
pub use reply::StopReason;
pub use request::{translate_request, ReplyContext, Translated};
pub use response::{translate_response, InvalidReply, TranslatedReply};
pub use stream::{StreamEnd, StreamSummary, StreamTranslator};

use crate::config::Api;
use std::fmt;

/// Whether requests of dialect `client` translate to `upstream`.
pub fn supported(client: Api, upstream: Api) -> bool {
    matches!(
        (client, upstream),
        (Api::Anthropic, Api::OpenAi)
            | (Api::Anthropic, Api::OpenAiResponses)
            | (Api::OpenAi, Api::Anthropic)
    )
}

/// What to do with one attempt of a request on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Same dialect (or a route without `translate`): forward unchanged.
    Passthrough,
    /// Translate; the upstream path is the provider's base_url prefix
    /// followed by this.
    Translate { path: &'static str },
    /// This attempt cannot be made: fail it as class `request`.
    Refuse(Untranslatable),
}

/// The plan for sending a request for `path` (normalised, no query) from
/// clients of `client` to a provider of `provider`. Only the dialect's own
/// endpoint translates: `/v1/messages/count_tokens` on a Messages route has
/// no counterpart at an OpenAI provider.
pub fn plan(client: Api, provider: Api, path: &str) -> Plan {
    if client == provider {
        return Plan::Passthrough;
    }
    if !supported(client, provider) {
        return Plan::Refuse(Untranslatable::new(format!(
            "{} requests are not translated to {}",
            client.as_str(),
            provider.as_str()
        )));
    }
    if Api::of_endpoint(path) != Some(client) {
        return Plan::Refuse(Untranslatable::new(format!(
            "only {} translates to {}; {path} does not",
            client.endpoint(),
            provider.as_str()
        )));
    }
    Plan::Translate {
        path: provider.endpoint(),
    }
}

/// A request the target dialect cannot express faithfully: the attempt
/// fails as class `request` with this message, and the route goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot translate this request: {0}")]
pub struct Untranslatable(pub String);

impl Untranslatable {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Untranslatable(msg.into())
    }
}

/// Something translation left out or changed on purpose; logged, one line
/// per kind and request, never content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Note {
    CacheControlDropped,
    ThinkingHistoryDropped,
    ThinkingOutputDropped,
    ThinkingNotRequested,
    ThinkingDisabledForTurn,
    TopKDropped,
    SamplingDropped,
    TemperatureClamped,
    ToolErrorFlagDropped,
    ToolResultImagesMoved,
    MaxTokensDefaulted,
    MetadataDropped,
    NameDropped,
    SystemMoved,
    ServiceTierDropped,
    ContextManagementDropped,
    EmptyMessageDropped,
    CitationsDropped,
    UnknownBlockDropped,
}

impl Note {
    pub fn as_str(self) -> &'static str {
        match self {
            Note::CacheControlDropped => "cache_control markers dropped: prompt caching does not carry across vendors",
            Note::ThinkingHistoryDropped => "thinking blocks in history dropped: their signatures belong to another vendor",
            Note::ThinkingOutputDropped => "thinking/reasoning output dropped: the client's dialect has no unsigned equivalent",
            Note::ThinkingNotRequested => "thinking request dropped: the target model does not look like a reasoning model",
            Note::ThinkingDisabledForTurn => "thinking not requested for this turn: the target requires it to be consistent with the tool-use turn or tool_choice",
            Note::TopKDropped => "top_k dropped: no equivalent",
            Note::SamplingDropped => "sampling parameters the target does not take were dropped",
            Note::TemperatureClamped => "temperature clamped to the target's range",
            Note::ToolErrorFlagDropped => "tool result is_error flag dropped (its text is kept)",
            Note::ToolResultImagesMoved => "images of a tool result moved into the following user message",
            Note::MaxTokensDefaulted => "max_tokens absent: a default was set, the target requires one",
            Note::MetadataDropped => "metadata the target cannot hold was dropped",
            Note::NameDropped => "message names dropped",
            Note::SystemMoved => "system messages after the first turn moved into the system prompt",
            Note::ServiceTierDropped => "service_tier dropped",
            Note::ContextManagementDropped => "context_management dropped: the target manages no context",
            Note::EmptyMessageDropped => "an empty message was dropped",
            Note::CitationsDropped => "citations dropped",
            Note::UnknownBlockDropped => "a content block of a kind the client's dialect lacks was dropped",
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The notes of one translation, each kind once, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes(Vec<Note>);

impl Notes {
    pub(crate) fn add(&mut self, n: Note) {
        if let Err(i) = self.0.binary_search(&n) {
            self.0.insert(i, n);
        }
    }
    pub fn as_slice(&self) -> &[Note] {
        &self.0
    }
    pub fn contains(&self, n: Note) -> bool {
        self.0.contains(&n)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests;
