//! A streamed response body on its way from a provider to the client when
//! the two do not speak alike: a translated attempt's provider stream is
//! turned, event by event, into whole events of the client's dialect
//! (`routes[].translate`), and a Bedrock eventstream into the Anthropic SSE
//! it carries (then translated too when the route translates). Everything
//! downstream (the hold until first content, the relay, usage and error
//! watching) then sees the client's dialect only.
//!
//! A stream that cannot be decoded (a corrupt or cut eventstream frame) is
//! [`Broken`], which the callers treat like a broken connection.

use crate::cloud::eventstream::EventStreamDecoder;
use crate::config::Api;
use crate::outcome::ErrorClass;
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
    /// A Bedrock eventstream: frames in, Anthropic SSE handed on to the
    /// next stage (plain or translated).
    EventStream(Box<EventStreaming>),
}

pub(super) struct Stitching {
    framer: SseFramer,
    pub(super) stitcher: Stitcher,
    out: BytesMut,
}

pub(super) struct EventStreaming {
    decoder: EventStreamDecoder,
    then: Decode,
    /// Whether the eventstream was found cut at its end (remembered:
    /// `finish` is idempotent).
    cut: Option<bool>,
}

/// The provider's stream cannot be decoded: like a broken connection, of
/// this class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Broken {
    pub(super) class: ErrorClass,
    pub(super) detail: String,
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

    /// Decode a Bedrock eventstream first, then go on as `then`.
    pub(super) fn eventstream(then: Decode) -> Decode {
        Decode::EventStream(Box::new(EventStreaming {
            decoder: EventStreamDecoder::new(),
            then,
            cut: None,
        }))
    }

    /// Upstream bytes in; what the client gets out (whole events when
    /// translating or decoding; `None` while a partial event or frame
    /// waits for its end).
    pub(super) fn push(&mut self, chunk: Bytes) -> Result<Option<Bytes>, Broken> {
        match self {
            Decode::Plain => Ok(Some(chunk)),
            Decode::Stitch(t) => {
                let Some(events) = t.framer.push(chunk) else {
                    return Ok(None);
                };
                for (name, data) in sse::events(&events) {
                    t.stitcher.push(name, &data, &mut t.out);
                }
                Ok((!t.out.is_empty()).then(|| t.out.split().freeze()))
            }
            Decode::Translate(t) => {
                let Some(events) = t.framer.push(chunk) else {
                    return Ok(None);
                };
                for (name, data) in sse::events(&events) {
                    t.tr.push(name, &data, &mut t.out);
                }
                Ok((!t.out.is_empty()).then(|| t.out.split().freeze()))
            }
            Decode::EventStream(e) => {
                let sse = e.decoder.push(&chunk).map_err(|err| Broken {
                    class: err.class(),
                    detail: err.to_string(),
                })?;
                if sse.is_empty() {
                    return Ok(None);
                }
                e.then.push(sse)
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
            Decode::EventStream(e) => {
                // Half a frame left over: the stream was cut, however
                // well-formed what came before it.
                let cut = *e.cut.get_or_insert_with(|| e.decoder.finish().is_err());
                let (tail, end) = e.then.finish();
                match end {
                    End::Complete if cut => (tail, End::Truncated),
                    end => (tail, end),
                }
            }
        }
    }

    /// What a translation learned (usage in the client's terms, the model);
    /// `None` when nothing was translated.
    pub(super) fn summary(&self) -> Option<&StreamSummary> {
        match self {
            Decode::Plain | Decode::Stitch(_) => None,
            Decode::Translate(t) => Some(t.tr.summary()),
            Decode::EventStream(e) => e.then.summary(),
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
        assert_eq!(
            d.push(chunk.clone()).unwrap().unwrap().as_ptr(),
            chunk.as_ptr()
        );
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
                if let Some(b) = d
                    .push(Bytes::copy_from_slice(&chat.as_bytes()[at..c]))
                    .unwrap()
                {
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
        ))
        .unwrap();
        assert_eq!(d.finish().1, End::Truncated);
    }

    mod eventstream {
        use super::*;
        use crate::cloud::eventstream::encode::{chunk, exception};

        const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}"#;
        const BLOCK: &str =
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        const DELTA: &str =
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        const BLOCK_STOP: &str = r#"{"type":"content_block_stop","index":0}"#;
        const MSG_DELTA: &str = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#;
        const STOP: &str = r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3,"outputTokenCount":2}}"#;

        fn wire(events: &[&str]) -> Vec<u8> {
            events.iter().flat_map(|e| chunk(e).to_vec()).collect()
        }

        /// Feed `wire` in pieces of `size`; the output and how it ended.
        fn run(d: &mut Decode, wire: &[u8], size: usize) -> (String, Result<End, Broken>) {
            let mut out = Vec::new();
            for piece in wire.chunks(size) {
                match d.push(Bytes::copy_from_slice(piece)) {
                    Ok(Some(b)) => out.extend_from_slice(&b),
                    Ok(None) => {}
                    Err(b) => return (String::from_utf8(out).unwrap(), Err(b)),
                }
            }
            let (tail, end) = d.finish();
            out.extend_from_slice(&tail.unwrap_or_default());
            (String::from_utf8(out).unwrap(), Ok(end))
        }

        #[test]
        fn frames_become_the_anthropic_sse_they_carry() {
            let w = wire(&[START, BLOCK, DELTA, BLOCK_STOP, MSG_DELTA, STOP]);
            for size in [1, 7, 64, w.len()] {
                let mut d = Decode::eventstream(Decode::Plain);
                let (out, end) = run(&mut d, &w, size);
                assert_eq!(end, Ok(End::Complete));
                let names: Vec<_> = sse::events(out.as_bytes())
                    .map(|(n, _)| n.unwrap().to_string())
                    .collect();
                assert_eq!(
                    names,
                    [
                        "message_start",
                        "content_block_start",
                        "content_block_delta",
                        "content_block_stop",
                        "message_delta",
                        "message_stop"
                    ],
                    "size {size}"
                );
                assert!(out.contains(STOP), "the metrics event goes on as it is");
            }
        }

        #[test]
        fn a_bedrock_stream_is_translated_for_an_openai_client() {
            let w = wire(&[START, BLOCK, DELTA, BLOCK_STOP, MSG_DELTA, STOP]);
            let ctx = ReplyContext {
                stream: true,
                include_usage: true,
                created: 1,
            };
            let mut d = Decode::eventstream(Decode::translate(Api::Anthropic, Api::OpenAi, &ctx));
            let (out, end) = run(&mut d, &w, 13);
            assert_eq!(end, Ok(End::Complete));
            assert!(out.contains("chat.completion.chunk"), "{out}");
            assert!(out.contains("\"Hi\""), "{out}");
            assert!(out.trim_end().ends_with("data: [DONE]"), "{out}");
            let usage = d.summary().map(|s| (s.usage.input, s.usage.output));
            assert_eq!(usage, Some((3, 2)), "Bedrock's metrics do not count twice");
        }

        #[test]
        fn an_exception_becomes_an_error_event_and_a_corrupt_frame_a_broken_stream() {
            let mut w = wire(&[START]);
            w.extend_from_slice(&exception("throttlingException", "slow down"));
            let mut d = Decode::eventstream(Decode::Plain);
            let (out, end) = run(&mut d, &w, 5);
            assert_eq!(end, Ok(End::Complete));
            let last = sse::events(out.as_bytes()).last().unwrap();
            assert_eq!(last.0, Some("error"));
            assert!(last.1.contains("rate_limit_error"), "{}", last.1);

            let mut bad = wire(&[START, BLOCK]);
            bad[20] ^= 0x40;
            let mut d = Decode::eventstream(Decode::Plain);
            let (_, end) = run(&mut d, &bad, bad.len());
            let broken = end.unwrap_err();
            assert_eq!(broken.class, ErrorClass::Network);
            assert!(broken.detail.contains("corrupt"), "{}", broken.detail);
        }

        #[test]
        fn a_stream_cut_inside_a_frame_is_truncated_and_stays_so() {
            let w = wire(&[START, BLOCK, DELTA]);
            let mut d = Decode::eventstream(Decode::Plain);
            let (out, end) = run(&mut d, &w[..w.len() - 9], 16);
            assert_eq!(end, Ok(End::Truncated));
            assert_eq!(sse::events(out.as_bytes()).count(), 2);
            assert_eq!(d.finish(), (None, End::Truncated), "finish is idempotent");
        }
    }
}
