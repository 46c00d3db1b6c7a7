//! The JSON body a cloud is sent: the client's Messages request with
//! `model` taken out (the cloud reads it from the URL), `anthropic_version`
//! set to the cloud's, and the `anthropic_beta` flags in the body.
//!
//! As in [`crate::body`], every other member is copied byte for byte from
//! the client's JSON: a 1 MiB prompt is scanned once, not re-encoded.

use crate::body::RawObject;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body must be a JSON object")]
    NotAnObject,
}

/// A client's request body, split into top-level members once.
pub struct ClientBody<'a> {
    members: RawObject<'a>,
    /// The top-level `model`, when it is a string.
    pub model: Option<String>,
    /// `"stream": true`.
    pub stream: bool,
    /// Flags of a top-level `anthropic_beta` array of strings, if any.
    pub betas: Vec<String>,
}

impl<'a> ClientBody<'a> {
    pub fn parse(body: &'a [u8]) -> Result<ClientBody<'a>, BodyError> {
        let members: RawObject<'a> =
            serde_json::from_slice(body).map_err(|_| BodyError::NotAnObject)?;
        let mut model = None;
        let mut stream = false;
        let mut betas = Vec::new();
        for (k, v) in &members.0 {
            match k.as_ref() {
                "model" if model.is_none() => {
                    model = serde_json::from_str::<Cow<str>>(v.get())
                        .ok()
                        .map(Cow::into_owned);
                }
                "stream" => stream = v.get() == "true",
                "anthropic_beta" => {
                    for f in serde_json::from_str::<Vec<Cow<str>>>(v.get()).unwrap_or_default() {
                        let f = f.trim();
                        if !f.is_empty() {
                            super::beta::push_unique(&mut betas, f);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(ClientBody {
            members,
            model,
            stream,
            betas,
        })
    }

    /// The body for the cloud: the client's members in order, less `model`,
    /// any member named in `drop`, and the client's own `anthropic_version`
    /// and `anthropic_beta`; then `anthropic_version` and, when any flag is
    /// left, `anthropic_beta`.
    pub fn write(&self, drop: &[&str], anthropic_version: &str, betas: &[String]) -> Bytes {
        let replaced = ["model", "anthropic_version", "anthropic_beta"];
        let kept = self
            .members
            .0
            .iter()
            .filter(|(k, _)| !replaced.contains(&k.as_ref()) && !drop.contains(&k.as_ref()));
        let size: usize = self
            .members
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out =
            Vec::with_capacity(size + 64 + betas.iter().map(|b| b.len() + 3).sum::<usize>());
        out.push(b'{');
        // Strings and plain string arrays: serialising cannot fail.
        out.extend_from_slice(b"\"anthropic_version\":");
        let _ = serde_json::to_writer(&mut out, anthropic_version);
        for (k, v) in kept {
            out.push(b',');
            let _ = serde_json::to_writer(&mut out, k.as_ref());
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        if !betas.is_empty() {
            out.extend_from_slice(b",\"anthropic_beta\":");
            let _ = serde_json::to_writer(&mut out, betas);
        }
        out.push(b'}');
        Bytes::from(out)
    }

    /// The value of a top-level member as the client wrote it.
    pub fn raw(&self, key: &str) -> Option<&RawValue> {
        self.members
            .0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_and_cloud_fields_are_replaced_and_the_rest_is_copied() {
        let body = br#"{"model":"claude-x","max_tokens":  10,"stream":true,"anthropic_version":"2023-06-01","messages":[{"role":"user","content":"h\u00e9 \"x\""}],"anthropic_beta":["b1"," b2 ","B1",7]}"#;
        let cb = ClientBody::parse(body).unwrap();
        assert_eq!(cb.model.as_deref(), Some("claude-x"));
        assert!(cb.stream);
        assert!(cb.betas.is_empty(), "a non-string flag spoils the array");
        let out = cb.write(&["stream"], "bedrock-2023-05-31", &["f1".to_string()]);
        let s = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            s,
            r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[{"role":"user","content":"h\u00e9 \"x\""}],"anthropic_beta":["f1"]}"#
        );
        let out = cb.write(&[], "vertex-2023-10-16", &[]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream"], true);
        assert!(v.get("model").is_none());
        assert!(v.get("anthropic_beta").is_none());
        assert_eq!(v["anthropic_version"], "vertex-2023-10-16");
    }

    #[test]
    fn body_flags_are_read_and_odd_bodies_rejected() {
        let cb = ClientBody::parse(br#"{"anthropic_beta":["b1"," b2 ","B1",""],"stream":"yes"}"#)
            .unwrap();
        assert_eq!(cb.betas, ["b1", "b2"]);
        assert!(!cb.stream);
        assert_eq!(cb.model, None);
        assert_eq!(
            std::str::from_utf8(&cb.write(&[], "v", &[])).unwrap(),
            r#"{"anthropic_version":"v","stream":"yes"}"#
        );
        assert_eq!(
            ClientBody::parse(b"{}").unwrap().write(&[], "v", &[]),
            Bytes::from_static(br#"{"anthropic_version":"v"}"#)
        );
        for bad in [&b"[1]"[..], b"", b"nope", b"{\"a\":1", b"\"s\""] {
            assert_eq!(
                ClientBody::parse(bad).err(),
                Some(BodyError::NotAnObject),
                "{bad:?}"
            );
        }
        let cb = ClientBody::parse(br#"{"model":7}"#).unwrap();
        assert_eq!(cb.model, None);
        assert_eq!(cb.raw("model").map(RawValue::get), Some("7"));
    }

    #[test]
    fn a_large_prompt_is_copied_not_reencoded() {
        let content = "x".repeat(1 << 20);
        let body =
            format!(r#"{{"model":"a","messages":[{{"role":"user","content":"{content}"}}]}}"#);
        let out = ClientBody::parse(body.as_bytes())
            .unwrap()
            .write(&[], "v", &[]);
        assert_eq!(
            out.len(),
            body.len() - r#""model":"a","#.len() + r#""anthropic_version":"v","#.len()
        );
    }
}
