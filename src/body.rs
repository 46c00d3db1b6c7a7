//! Request bodies: the few top-level fields steadfast reads (`model`,
//! `stream`, and on a route with session affinity the session key) and the
//! per-provider `model` rewrite.
//!
//! Only the top-level `model` value is replaced; every other value is copied
//! byte for byte from the client's JSON (RawValue), so a 1 MiB prompt is not
//! re-encoded and nothing the client sent is normalised away.

use crate::affinity::{Fnv, SessionKey, SessionSource};
use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// What the request body says about the request. Parsed once per request,
/// borrowing and skipping every other member, so a 1 MiB prompt costs a
/// scan, not a JSON tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    pub model: Option<String>,
    /// `"stream": true`: the answer comes as SSE, so its header comes fast.
    pub stream: bool,
    /// The session key, on a route with `affinity: session`
    /// ([`RequestMeta::parse_with_session`], or the session header).
    pub session: Option<SessionKey>,
}

impl RequestMeta {
    /// Longer model names are not plausible: not recorded.
    const MAX_MODEL: usize = 256;

    pub fn parse(body: &[u8]) -> RequestMeta {
        // Raw values: a member of an unexpected type spoils only itself.
        #[derive(serde::Deserialize)]
        struct Top<'a> {
            #[serde(borrow, default)]
            model: Option<&'a RawValue>,
            #[serde(borrow, default)]
            stream: Option<&'a RawValue>,
        }
        if body.is_empty() {
            return RequestMeta::default();
        }
        match serde_json::from_slice::<Top>(body) {
            Ok(t) => RequestMeta {
                model: Self::model(t.model),
                stream: t.stream.is_some_and(|v| v.get() == "true"),
                session: None,
            },
            Err(_) => RequestMeta::default(),
        }
    }

    /// As [`RequestMeta::parse`], and the body's session key too, in the
    /// same single pass: the first of `metadata.user_id`,
    /// `prompt_cache_key`, `previous_response_id` and `user` that is a
    /// non-empty string; else a hash of the system prompt (`system`,
    /// `instructions`) and the conversation's first turn (the leading
    /// `messages` / `input` items up to the first user message), which stay
    /// the same for a whole conversation. Nothing is copied: members are
    /// borrowed from the body and hashed in place.
    pub fn parse_with_session(body: &[u8]) -> RequestMeta {
        #[derive(serde::Deserialize)]
        struct Top<'a> {
            #[serde(borrow, default)]
            model: Option<&'a RawValue>,
            #[serde(borrow, default)]
            stream: Option<&'a RawValue>,
            #[serde(borrow, default)]
            metadata: Option<&'a RawValue>,
            #[serde(borrow, default)]
            prompt_cache_key: Option<&'a RawValue>,
            #[serde(borrow, default)]
            previous_response_id: Option<&'a RawValue>,
            #[serde(borrow, default)]
            user: Option<&'a RawValue>,
            #[serde(borrow, default)]
            system: Option<&'a RawValue>,
            #[serde(borrow, default)]
            instructions: Option<&'a RawValue>,
            #[serde(borrow, default)]
            messages: Option<Turns<'a>>,
            #[serde(borrow, default)]
            input: Option<Turns<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Metadata<'a> {
            #[serde(borrow, default)]
            user_id: Option<&'a RawValue>,
        }
        if body.is_empty() {
            return RequestMeta::default();
        }
        let Ok(t) = serde_json::from_slice::<Top>(body) else {
            return RequestMeta::default();
        };
        let user_id = t
            .metadata
            .and_then(|m| serde_json::from_str::<Metadata>(m.get()).ok())
            .and_then(|m| m.user_id);
        let keyed = [
            (SessionSource::MetadataUserId, user_id),
            (SessionSource::PromptCacheKey, t.prompt_cache_key),
            (SessionSource::PreviousResponseId, t.previous_response_id),
            (SessionSource::User, t.user),
        ]
        .into_iter()
        .find_map(|(source, raw)| {
            let s = serde_json::from_str::<Cow<str>>(raw?.get()).ok()?;
            (!s.is_empty()).then(|| SessionKey::of(source, s.as_bytes()))
        });
        let session = keyed.or_else(|| {
            prompt_key(
                [t.system, t.instructions],
                [t.messages.as_ref(), t.input.as_ref()],
            )
        });
        RequestMeta {
            model: Self::model(t.model),
            stream: t.stream.is_some_and(|v| v.get() == "true"),
            session,
        }
    }

    fn model(raw: Option<&RawValue>) -> Option<String> {
        raw.and_then(|v| serde_json::from_str::<Cow<str>>(v.get()).ok())
            .filter(|m| !m.is_empty() && m.len() <= Self::MAX_MODEL)
            .map(Cow::into_owned)
    }

    /// The model this provider is asked for, after its `models` rewrite.
    pub fn model_for<'a>(&'a self, models: &'a BTreeMap<String, String>) -> Option<&'a str> {
        let m = self.model.as_deref()?;
        Some(models.get(m).map_or(m, String::as_str))
    }
}

/// At most this many leading items of `messages` / `input` are looked at
/// for the first user message (system and developer messages come first).
const MAX_LEAD_ITEMS: usize = 8;

/// At most this many bytes of the prompt are hashed for a session key; the
/// length of every member is hashed too. Enough to tell conversations
/// apart, bounded for a 1 MiB first message.
const MAX_PROMPT_HASHED: usize = 64 * 1024;

/// The first turn of a conversation: the leading items of `messages` /
/// `input` up to and including the first user message, borrowed; or, for
/// an `input` string, its hash. Any other JSON is no turn at all (it does
/// not fail the parse: the provider judges the body).
#[derive(Debug, Default)]
struct Turns<'a> {
    lead: Vec<&'a RawValue>,
    text: Option<u64>,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Turns<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Turns<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of messages or a string")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Turns<'a>, A::Error> {
                let mut lead = Vec::new();
                while lead.len() < MAX_LEAD_ITEMS {
                    let Some(item) = seq.next_element::<&'de RawValue>()? else {
                        return Ok(Turns { lead, text: None });
                    };
                    lead.push(item);
                    if is_user_message(item) {
                        break;
                    }
                }
                // The rest of the conversation is skipped, not kept.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Turns { lead, text: None })
            }
            fn visit_str<E>(self, v: &str) -> Result<Turns<'a>, E> {
                let mut h = Fnv::default();
                let take = v.len().min(MAX_PROMPT_HASHED);
                h.write(&v.as_bytes()[..take]);
                h.write(&(v.len() as u64).to_le_bytes());
                Ok(Turns {
                    lead: Vec::new(),
                    text: Some(h.finish()),
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Turns<'a>, M::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Turns::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Turns<'a>, E> {
                Ok(Turns::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Turns<'a>, E> {
                Ok(Turns::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Turns<'a>, E> {
                Ok(Turns::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Turns<'a>, E> {
                Ok(Turns::default())
            }
            fn visit_unit<E>(self) -> Result<Turns<'a>, E> {
                Ok(Turns::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn is_user_message(item: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Role<'a> {
        #[serde(borrow, default)]
        role: Option<Cow<'a, str>>,
    }
    item.get().starts_with('{')
        && serde_json::from_str::<Role>(item.get()).is_ok_and(|r| r.role.as_deref() == Some("user"))
}

/// The fallback session key: a hash of the system prompt and the first
/// turn, or `None` when the body has neither.
fn prompt_key(systems: [Option<&RawValue>; 2], turns: [Option<&Turns>; 2]) -> Option<SessionKey> {
    let mut h = Fnv::default();
    let mut budget = MAX_PROMPT_HASHED;
    let mut any = false;
    for (tag, raw) in [b"system".as_slice(), b"instructions"]
        .into_iter()
        .zip(systems)
    {
        if let Some(raw) = raw {
            any = true;
            h.write(tag);
            hash_prompt_value(raw, &mut h, 0, &mut budget);
        }
    }
    for (tag, t) in [b"messages".as_slice(), b"input"].into_iter().zip(turns) {
        let Some(t) = t else { continue };
        h.write(tag);
        if let Some(text) = t.text {
            any = true;
            h.write(&text.to_le_bytes());
        }
        for item in &t.lead {
            any = true;
            hash_prompt_value(item, &mut h, 0, &mut budget);
        }
    }
    any.then(|| SessionKey {
        hash: h.finish(),
        source: SessionSource::Prompt,
    })
}

/// Hash a prompt member as the client means it: object members and array
/// items in order, leaves as their JSON bytes (within `budget`) and length,
/// and `cache_control` markers left out: clients move them from turn to
/// turn (onto the newest message), which must not change the session.
fn hash_prompt_value(raw: &RawValue, h: &mut Fnv, depth: u8, budget: &mut usize) {
    const MAX_DEPTH: u8 = 4;
    let s = raw.get();
    if depth < MAX_DEPTH {
        match s.as_bytes().first() {
            Some(b'{') => {
                if let Ok(obj) = serde_json::from_str::<RawObject>(s) {
                    h.write(b"{");
                    for (k, v) in obj.0.iter().filter(|(k, _)| k != "cache_control") {
                        h.write(k.as_bytes());
                        h.write(b":");
                        hash_prompt_value(v, h, depth + 1, budget);
                        h.write(b",");
                    }
                    h.write(b"}");
                    return;
                }
            }
            Some(b'[') => {
                if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(s) {
                    h.write(b"[");
                    for v in items {
                        hash_prompt_value(v, h, depth + 1, budget);
                        h.write(b",");
                    }
                    h.write(b"]");
                    return;
                }
            }
            _ => {}
        }
    }
    let take = s.len().min(*budget);
    h.write(&s.as_bytes()[..take]);
    *budget -= take;
    h.write(&(s.len() as u64).to_le_bytes());
}

/// The top-level members of a JSON object, in order, values unparsed.
pub(crate) struct RawObject<'a>(pub(crate) Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((k, raw)) =
                    m.next_entry::<std::borrow::Cow<'de, str>, &'de RawValue>()?
                {
                    v.push((k, raw));
                }
                Ok(RawObject(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The body to send to a provider with this `models` map: the client's
/// bytes when nothing maps, else the body with `model` replaced. A body that
/// is not a JSON object is sent unchanged (the provider will judge it).
pub fn rewrite_model(body: &Bytes, models: &BTreeMap<String, String>) -> Bytes {
    if models.is_empty() || body.is_empty() {
        return body.clone();
    }
    let Ok(obj) = serde_json::from_slice::<RawObject>(body) else {
        return body.clone();
    };
    let target = obj.0.iter().find_map(|(k, v)| {
        (k == "model")
            .then(|| serde_json::from_str::<&str>(v.get()).ok())
            .flatten()
            .and_then(|m| models.get(m))
    });
    let Some(target) = target else {
        return body.clone();
    };
    let mut out = Vec::with_capacity(body.len() + target.len());
    out.push(b'{');
    for (i, (k, v)) in obj.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Keys and the new model are plain strings: serialising cannot fail.
        let _ = serde_json::to_writer(&mut out, k.as_ref());
        out.push(b':');
        if k == "model" {
            let _ = serde_json::to_writer(&mut out, target);
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    out.push(b'}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn request_meta_reads_model_and_stream_only() {
        let m = RequestMeta::parse(
            br#"{"messages":[{"role":"user","content":"{\"stream\":false}"}],"model":"claude-x","stream":true,"metadata":{"model":"no"}}"#,
        );
        assert_eq!(m.model.as_deref(), Some("claude-x"));
        assert!(m.stream);
        assert_eq!(
            m.model_for(&map(&[("claude-x", "claude-x-2025")])),
            Some("claude-x-2025")
        );
        assert_eq!(m.model_for(&BTreeMap::new()), Some("claude-x"));
        assert_eq!(RequestMeta::parse(b"not json"), RequestMeta::default());
        assert_eq!(RequestMeta::parse(b""), RequestMeta::default());
        let odd = RequestMeta::parse(br#"{"model":"m","stream":"yes"}"#);
        assert!(!odd.stream);
        assert_eq!(odd.model.as_deref(), Some("m"));
        assert_eq!(
            RequestMeta::parse(br#"{"model":7,"stream":true}"#).model,
            None
        );
    }

    #[test]
    fn mapped_model_is_replaced_and_rest_is_byte_identical() {
        let body = Bytes::from_static(
            br#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"h\u00e9 \"x\""}],"max_tokens":  10}"#,
        );
        let out = rewrite_model(
            &body,
            &map(&[("claude-sonnet-4-5", "claude-sonnet-4-5-20250929")]),
        );
        let s = std::str::from_utf8(&out).unwrap();
        assert!(
            s.starts_with(r#"{"model":"claude-sonnet-4-5-20250929","#),
            "{s}"
        );
        assert!(s.contains(r#""content":"h\u00e9 \"x\"""#), "{s}");
        assert!(s.contains(r#""max_tokens":10"#) || s.contains(r#""max_tokens":  10"#));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "claude-sonnet-4-5-20250929");
    }

    #[test]
    fn unmapped_or_non_json_bodies_are_untouched() {
        let m = map(&[("a", "b")]);
        let body = Bytes::from_static(br#"{"model":"other","x":1}"#);
        assert_eq!(rewrite_model(&body, &m).as_ptr(), body.as_ptr());
        let junk = Bytes::from_static(b"not json");
        assert_eq!(rewrite_model(&junk, &m), junk);
        let arr = Bytes::from_static(b"[1,2]");
        assert_eq!(rewrite_model(&arr, &m), arr);
        assert_eq!(rewrite_model(&body, &BTreeMap::new()), body);
    }

    #[test]
    fn large_prompt_rewrite_keeps_length_close() {
        let content = "x".repeat(1 << 20);
        let body = Bytes::from(format!(r#"{{"model":"a","prompt":"{content}"}}"#));
        let out = rewrite_model(&body, &map(&[("a", "bbb")]));
        assert_eq!(out.len(), body.len() + 2);
    }

    use crate::affinity::SessionSource;

    fn session(body: &str) -> Option<SessionKey> {
        RequestMeta::parse_with_session(body.as_bytes()).session
    }

    #[test]
    fn session_key_comes_from_the_first_field_present() {
        let k = |src, v: &str| Some(SessionKey::of(src, v.as_bytes()));
        let body = r#"{"model":"m","user":"u1","previous_response_id":"resp_1","prompt_cache_key":"pck","metadata":{"user_id":"user_x_session_1"},"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            session(body),
            k(SessionSource::MetadataUserId, "user_x_session_1")
        );
        let m = RequestMeta::parse_with_session(body.as_bytes());
        assert_eq!((m.model.as_deref(), m.stream), (Some("m"), false));
        let body = r#"{"user":"u1","previous_response_id":"resp_1","prompt_cache_key":"pck","metadata":{"user_id":""}}"#;
        assert_eq!(session(body), k(SessionSource::PromptCacheKey, "pck"));
        let body = r#"{"user":"u1","previous_response_id":"resp_1","prompt_cache_key":7}"#;
        assert_eq!(
            session(body),
            k(SessionSource::PreviousResponseId, "resp_1")
        );
        assert_eq!(
            session(r#"{"user":"u\u0031"}"#),
            k(SessionSource::User, "u1")
        );
        assert_eq!(session(r#"{"model":"m"}"#), None);
        assert_eq!(session("not json"), None);
        assert_eq!(session(""), None);
        // The plain parse never looks.
        assert_eq!(RequestMeta::parse(br#"{"user":"u1"}"#).session, None);
    }

    #[test]
    fn previous_response_id_keys_stick_whatever_else_the_turn_holds() {
        let a = session(
            r#"{"model":"gpt","previous_response_id":"resp_9","input":[{"role":"user","content":"next question"}]}"#,
        );
        let b =
            session(r#"{"input":"something else","previous_response_id":"resp_9","stream":true}"#);
        assert_eq!(a, b);
        assert_eq!(a.map(|k| k.source), Some(SessionSource::PreviousResponseId));
    }

    #[test]
    fn a_conversation_keeps_its_prompt_key_as_it_grows() {
        // Anthropic: system + first user message; later turns append, and
        // the client moves cache_control onto the newest message.
        let t1 = r#"{"model":"claude","system":[{"type":"text","text":"You are helpful.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"fix the bug","cache_control":{"type":"ephemeral"}}]}]}"#;
        let t3 = r#"{"model":"claude","max_tokens":5,"system":[{"type":"text","text":"You are helpful.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"fix the bug"}]},{"role":"assistant","content":"done"},{"role":"user","content":[{"type":"text","text":"thanks","cache_control":{"type":"ephemeral"}}]}]}"#;
        let k1 = session(t1).unwrap();
        assert_eq!(k1.source, SessionSource::Prompt);
        assert_eq!(session(t3), Some(k1));
        // Another first message is another session.
        let other = t1.replace("fix the bug", "write tests");
        assert_ne!(session(&other), Some(k1));

        // Chat Completions: the system message and the first user message.
        let c1 =
            r#"{"messages":[{"role":"system","content":"sys"},{"role":"user","content":"q1"}]}"#;
        let c2 = r#"{"messages":[{"role":"system","content":"sys"},{"role":"user","content":"q1"},{"role":"assistant","content":"a1"},{"role":"user","content":"q2"}]}"#;
        let c3 =
            r#"{"messages":[{"role":"system","content":"sys"},{"role":"user","content":"other"}]}"#;
        assert_eq!(session(c1), session(c2));
        assert_ne!(session(c1), session(c3));

        // Responses without store: the client sends the whole history back,
        // encrypted reasoning included; the first turn is unchanged.
        let r1 = r#"{"model":"o4","store":false,"instructions":"be brief","input":[{"type":"message","role":"user","content":"plan it"}]}"#;
        let r2 = r#"{"model":"o4","store":false,"instructions":"be brief","include":["reasoning.encrypted_content"],"input":[{"type":"message","role":"user","content":"plan it"},{"type":"reasoning","encrypted_content":"gAAAAB...","summary":[]},{"type":"message","role":"assistant","content":"ok"},{"type":"message","role":"user","content":"go on"}]}"#;
        assert_eq!(session(r1), session(r2));
        assert_eq!(session(r1).map(|k| k.source), Some(SessionSource::Prompt));
        assert_ne!(session(r1), session(&r1.replace("be brief", "be long")));
    }

    #[test]
    fn odd_prompt_members_do_not_fail_the_parse() {
        for body in [
            r#"{"model":"m","messages":5}"#,
            r#"{"model":"m","messages":{"role":"user"}}"#,
            r#"{"model":"m","messages":[1,"x",null]}"#,
            r#"{"model":"m","input":"just a string"}"#,
        ] {
            let m = RequestMeta::parse_with_session(body.as_bytes());
            assert_eq!(m.model.as_deref(), Some("m"), "{body}");
        }
        assert_eq!(session(r#"{"messages":5}"#), None);
        assert!(session(r#"{"input":"just a string"}"#).is_some());
    }

    #[test]
    fn a_large_first_message_is_hashed_within_bounds() {
        let big = "x".repeat(1 << 20);
        let body = format!(r#"{{"messages":[{{"role":"user","content":"{big}"}}]}}"#);
        let k = session(&body).unwrap();
        // Same first 64 KiB, another length: another session.
        let longer = format!(r#"{{"messages":[{{"role":"user","content":"{big}y"}}]}}"#);
        assert_ne!(session(&longer), Some(k));
        assert_eq!(session(&body), Some(k));
    }
}
