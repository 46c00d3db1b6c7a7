//! Request bodies: the few top-level fields steadfast reads (`model`,
//! `stream`) and the per-provider `model` rewrite.
//!
//! Only the top-level `model` value is replaced; every other value is copied
//! byte for byte from the client's JSON (RawValue), so a 1 MiB prompt is not
//! re-encoded and nothing the client sent is normalised away.

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
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
                model: t
                    .model
                    .and_then(|v| serde_json::from_str::<std::borrow::Cow<str>>(v.get()).ok())
                    .filter(|m| !m.is_empty() && m.len() <= Self::MAX_MODEL)
                    .map(|m| m.into_owned()),
                stream: t.stream.is_some_and(|v| v.get() == "true"),
            },
            Err(_) => RequestMeta::default(),
        }
    }

    /// The model this provider is asked for, after its `models` rewrite.
    pub fn model_for<'a>(&'a self, models: &'a BTreeMap<String, String>) -> Option<&'a str> {
        let m = self.model.as_deref()?;
        Some(models.get(m).map_or(m, String::as_str))
    }
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
}
