//! Serde helpers shared by the dialects: `string | T` members without
//! serde's buffering (so borrowed strings and raw values survive), SSE
//! event output, and data URLs.

use bytes::{BufMut, BytesMut};
use serde::de::{self, value::MapAccessDeserializer, value::SeqAccessDeserializer, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A member that is either a string or something else (an array of parts,
/// an object). Deserialized by hand: serde's untagged enums buffer the
/// value, which loses borrowing and cannot hold a `RawValue`.
#[derive(Debug, Clone, PartialEq)]
pub enum StrOr<'a, T> {
    Str(Cow<'a, str>),
    Other(T),
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for StrOr<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a, T>(PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for V<'a, T> {
            type Value = StrOr<'a, T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array or an object")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOr::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOr::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(StrOr::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                T::deserialize(SeqAccessDeserializer::new(seq)).map(StrOr::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(StrOr::Other)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<T: Serialize> Serialize for StrOr<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StrOr::Str(v) => s.serialize_str(v),
            StrOr::Other(t) => t.serialize(s),
        }
    }
}

/// A raw JSON member, borrowed from the body (serde's own `Cow` impl would
/// copy it). `null` reads as absent.
pub fn borrow_raw<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, RawValue>>, D::Error> {
    Option::<&'de RawValue>::deserialize(d).map(|o| o.map(Cow::Borrowed))
}

/// Write one SSE event. serde_json escapes control characters, so the data
/// is always a single line.
pub fn sse(out: &mut BytesMut, name: Option<&str>, data: &impl Serialize) {
    if let Some(n) = name {
        out.put_slice(b"event: ");
        out.put_slice(n.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    // Our event types hold only strings, numbers and string-keyed maps:
    // serialising them cannot fail.
    let _ = serde_json::to_writer(out.writer(), data);
    out.put_slice(b"\n\n");
}

/// Write one SSE event whose data is already JSON text (one line).
pub fn sse_raw(out: &mut BytesMut, name: Option<&str>, data: &[u8]) {
    if let Some(n) = name {
        out.put_slice(b"event: ");
        out.put_slice(n.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

/// `data:<media type>;base64,<data>` split into its media type and data.
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (head, data) = rest.split_once(',')?;
    let media = head.strip_suffix(";base64")?;
    Some((media, data))
}

/// An image or file reference written as a URL: a plain one, or a data URL
/// assembled while it is serialised (an image's base64 is not copied into a
/// new string first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Url<'a> {
    Plain(&'a str),
    Data { media: &'a str, data: &'a str },
}

impl fmt::Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Url::Plain(u) => f.write_str(u),
            Url::Data { media, data } => write!(f, "data:{media};base64,{data}"),
        }
    }
}

impl Serialize for Url<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether `s` is one complete JSON value (a tool call's arguments that
/// can take no more deltas). A small scanner: the arguments are already
/// validated by the model's vendor; this only tracks nesting and strings.
#[derive(Debug, Clone, Default)]
pub struct JsonEnd {
    depth: u32,
    started: bool,
    in_str: bool,
    escape: bool,
    done: bool,
}

impl JsonEnd {
    pub fn feed(&mut self, s: &str) {
        for b in s.bytes() {
            if self.in_str {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_str = true;
                    self.started = true;
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    self.started = true;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.done = true;
                    }
                }
                _ => {}
            }
        }
    }

    /// A complete object or array has been seen.
    pub fn complete(&self) -> bool {
        self.done && self.depth == 0 && !self.in_str
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_or_borrows_and_takes_arrays() {
        let v: StrOr<Vec<u32>> = serde_json::from_str("\"plain\"").unwrap();
        assert!(matches!(v, StrOr::Str(Cow::Borrowed("plain"))));
        let v: StrOr<Vec<u32>> = serde_json::from_str("\"esc\\n\"").unwrap();
        assert_eq!(v, StrOr::Str(Cow::Owned("esc\n".into())));
        let v: StrOr<Vec<u32>> = serde_json::from_str("[1,2]").unwrap();
        assert_eq!(v, StrOr::Other(vec![1, 2]));
        assert!(serde_json::from_str::<StrOr<Vec<u32>>>("3").is_err());
        assert_eq!(serde_json::to_string(&v).unwrap(), "[1,2]");
    }

    #[test]
    fn raw_values_survive_str_or() {
        #[derive(Deserialize)]
        struct O<'a> {
            #[serde(borrow)]
            x: &'a serde_json::value::RawValue,
        }
        let v: StrOr<O> = serde_json::from_str(r#"{"x": {"a": [1]}}"#).unwrap();
        let StrOr::Other(o) = v else { panic!() };
        assert_eq!(o.x.get(), r#"{"a": [1]}"#);
    }

    #[test]
    fn data_urls() {
        assert_eq!(
            parse_data_url("data:image/png;base64,iVBOR"),
            Some(("image/png", "iVBOR"))
        );
        assert_eq!(parse_data_url("https://x/y.png"), None);
        assert_eq!(parse_data_url("data:image/png,raw"), None);
        let u = Url::Data {
            media: "image/png",
            data: "iVBOR",
        };
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            "\"data:image/png;base64,iVBOR\""
        );
    }

    #[test]
    fn json_end_tracks_nesting_and_strings() {
        let mut j = JsonEnd::default();
        for part in ["{\"a\": \"}", "\\\"{\", \"b\": [1, {", "}]", "}"] {
            assert!(!j.complete());
            j.feed(part);
        }
        assert!(j.complete());
        let mut e = JsonEnd::default();
        e.feed("");
        assert!(!e.complete());
    }

    #[test]
    fn sse_events_are_single_lines() {
        let mut out = BytesMut::new();
        sse(&mut out, Some("x"), &serde_json::json!({"t": "a\nb"}));
        assert_eq!(&out[..], b"event: x\ndata: {\"t\":\"a\\nb\"}\n\n");
    }
}
