//! A streamed response body on its way from a provider to the client when
//! the two do not speak alike: a translated attempt's provider stream is
//! turned, event by event, into whole events of the client's dialect
//! (`routes[].translate`). Everything downstream (the hold until first
//! content, the relay, usage and error watching) then sees the client's
//! dialect only.

use crate::config::Api;
use crate::resume::Stitcher;
use crate::sse::{self, SseFramer};
use crate::translate::{ReplyContext, StreamEnd, StreamSummary, StreamTranslator};
use bytes::{Bytes, BytesMut};

/// How the provider's stream ended, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The client's dialect's closing events went out (or the body is
    /// forwarded as is and ended cleanly).
    Complete,
    /// The provider stopped before its stream's end: the client needs an
    /// error event of ours.
    Truncated,
    /// An error event went out already; the stream is over.
    Failed,
}

pub(super) enum Decode {
    /// The provider speaks the client's dialect: bytes go as they come.
    Plain,
    /// A translated stream: whole provider events in, whole client events
    /// out.
    Translate(Box<Translating>),
    /// The continuation of a stream cut mid-text, stitched into the
    /// client's open stream (`retry.resume_streams`).
    Stitch(Box<Stitching>),
}

pub(super) struct Stitching {
    framer: SseFramer,
    pub(super) stitcher: Stitcher,
    out: BytesMut,
}

pub(super) struct Translating {
    framer: SseFramer,
    tr: StreamTranslator,
    out: BytesMut,
    ended: Option<End>,
}

impl Decode {
    pub(super) fn translate(upstream: Api, client: Api, ctx: &ReplyContext) -> Decode {
        Decode::Translate(Box::new(Translating {
            framer: SseFramer::new(),
            tr: StreamTranslator::new(upstream, client, ctx),
            out: BytesMut::new(),
            ended: None,
        }))
    }

    pub(super) fn stitch(stitcher: Stitcher) -> Decode {
        Decode::Stitch(Box::new(Stitching {
            framer: SseFramer::new(),
            stitcher,
            out: BytesMut::new(),
        }))
    }

    /// Upstream bytes in; what the client gets out (whole events when
    /// translating; `None` while a partial event waits for its end).
    pub(super) fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        match self {
            Decode::Plain => Some(chunk),
            Decode::Stitch(t) => {
                let events = t.framer.push(chunk)?;
                for (name, data) in sse::events(&events) {
                    t.stitcher.push(name, &data, &mut t.out);
                }
                (!t.out.is_empty()).then(|| t.out.split().freeze())
            }
            Decode::Translate(t) => {
                let events = t.framer.push(chunk)?;
                for (name, data) in sse::events(&events) {
                    t.tr.push(name, &data, &mut t.out);
                }
                (!t.out.is_empty()).then(|| t.out.split().freeze())
            }
        }
    }

    /// The provider's body ended cleanly: the closing events a translation
    /// owes the client, and how the stream ended. Idempotent.
    pub(super) fn finish(&mut self) -> (Option<Bytes>, End) {
        match self {
            Decode::Plain => (None, End::Complete),
            Decode::Stitch(t) => {
                if let Some(rest) = t.framer.finish() {
                    for (name, data) in sse::events(&rest) {
                        t.stitcher.push(name, &data, &mut t.out);
                    }
                }
                t.stitcher.finish(&mut t.out);
                (
                    (!t.out.is_empty()).then(|| t.out.split().freeze()),
                    End::Complete,
                )
            }
            Decode::Translate(t) => {
                if let Some(end) = t.ended {
                    return (None, end);
                }
                if let Some(rest) = t.framer.finish() {
                    for (name, data) in sse::events(&rest) {
                        t.tr.push(name, &data, &mut t.out);
                    }
                }
                let end = match t.tr.finish(&mut t.out) {
                    StreamEnd::Complete => End::Complete,
                    StreamEnd::Truncated => End::Truncated,
                    StreamEnd::Failed => End::Failed,
                };
                t.ended = Some(end);
                ((!t.out.is_empty()).then(|| t.out.split().freeze()), end)
            }
        }
    }

    /// What a translation learned (usage in the client's terms, the model);
    /// `None` when nothing was translated.
    pub(super) fn summary(&self) -> Option<&StreamSummary> {
        match self {
            Decode::Plain | Decode::Stitch(_) => None,
            Decode::Translate(t) => Some(t.tr.summary()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bodies_pass_through_untouched() {
        let mut d = Decode::Plain;
        let chunk = Bytes::from_static(b"data: x");
        assert_eq!(d.push(chunk.clone()).unwrap().as_ptr(), chunk.as_ptr());
        assert_eq!(d.finish(), (None, End::Complete));
    }

    #[test]
    fn a_chat_stream_comes_out_as_one_messages_stream_whatever_its_chunking() {
        let chat = concat!(
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let ctx = ReplyContext {
            stream: true,
            include_usage: true,
            created: 1,
        };
        let run = |cuts: &[usize]| {
            let mut d = Decode::translate(Api::OpenAi, Api::Anthropic, &ctx);
            let mut out = Vec::new();
            let mut at = 0;
            for &c in cuts.iter().chain(std::iter::once(&chat.len())) {
                if let Some(b) = d.push(Bytes::copy_from_slice(&chat.as_bytes()[at..c])) {
                    out.extend_from_slice(&b);
                }
                at = c;
            }
            let (tail, end) = d.finish();
            out.extend_from_slice(&tail.unwrap_or_default());
            assert_eq!(end, End::Complete);
            assert_eq!(d.finish(), (None, End::Complete), "finish is idempotent");
            (out, d.summary().map(|s| s.usage))
        };
        let (whole, usage) = run(&[]);
        let text = String::from_utf8(whole.clone()).unwrap();
        let names: Vec<_> = sse::events(&whole)
            .map(|(n, _)| n.map(str::to_string))
            .collect();
        assert_eq!(
            names.first().cloned().flatten().as_deref(),
            Some("message_start")
        );
        assert_eq!(
            names.last().cloned().flatten().as_deref(),
            Some("message_stop")
        );
        assert!(text.contains("\"Hi\""), "{text}");
        assert_eq!(usage.map(|u| (u.input, u.output)), Some((5, 2)));
        for cut in [1, 7, 40, 160, 300] {
            assert_eq!(run(&[cut.min(chat.len() - 1)]).0, whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_translated_stream_cut_short_is_truncated() {
        let mut d = Decode::translate(Api::OpenAi, Api::Anthropic, &ReplyContext::default());
        d.push(Bytes::from_static(
            b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        ));
        assert_eq!(d.finish().1, End::Truncated);
    }
}
