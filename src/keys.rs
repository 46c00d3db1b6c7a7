//! Provider keys: what a key may hold, the header that carries it upstream,
//! and rotation of keys kept in files (`providers[].api_key_file`).
//!
//! A key file is re-read when its content changes (see
//! `crate::lifecycle::reload`, which watches it with the config file): a
//! good new key is swapped in whole, lock-free, so an attempt takes one
//! snapshot of it and a request in flight is never sent half of a rotation.
//! An empty or unreadable file keeps the key in use (last known good), like
//! an invalid config file keeps the config in use. Key values never appear
//! in logs, errors or metrics: a [`KeyProblem`] says what is wrong with a
//! file, never what it holds.

use crate::config::{Api, Secret};
use http::{HeaderName, HeaderValue};
use std::fmt;
use std::path::Path;

/// Why a key (from a file or a variable) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    /// The file cannot be read; the I/O error, which never quotes content.
    Unreadable(String),
    /// Nothing but whitespace.
    Empty,
    /// A byte that cannot go into an HTTP header, or a key spread over
    /// several lines (two keys in one file, say).
    NotHeaderSafe,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::Unreadable(e) => write!(f, "cannot be read: {e}"),
            KeyProblem::Empty => f.write_str("is empty"),
            KeyProblem::NotHeaderSafe => f.write_str(
                "holds characters a key cannot have (spaces, line breaks, control or \
                 non-ASCII characters) between its first and last character",
            ),
        }
    }
}

/// A key from raw bytes: whitespace and line breaks around it are dropped
/// (editors and `echo` add a newline; Kubernetes keeps whatever was put in
/// the Secret); what is left must be printable ASCII without spaces.
pub fn parse(raw: &[u8]) -> Result<Secret, KeyProblem> {
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if !trimmed.iter().all(|b| b.is_ascii_graphic()) {
        return Err(KeyProblem::NotHeaderSafe);
    }
    // All ASCII, checked above.
    let text = String::from_utf8_lossy(trimmed).into_owned();
    Ok(Secret::new(text))
}

/// Read a key file through its path (following symlinks, so a Kubernetes
/// Secret's `..data` swap is seen).
pub fn read_file(path: &Path) -> Result<Secret, KeyProblem> {
    let raw = std::fs::read(path).map_err(|e| KeyProblem::Unreadable(e.to_string()))?;
    parse(&raw)
}

/// A provider's credential header, built once per key.
pub struct ProviderKey {
    pub name: HeaderName,
    pub value: HeaderValue,
    secret: Secret,
}

impl fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderKey({}: <redacted>)", self.name)
    }
}

impl ProviderKey {
    /// `x-api-key: K` for Anthropic, `Authorization: Bearer K` for OpenAI.
    /// `None` only for a key [`parse`] would have refused.
    pub fn new(api: Api, secret: Secret) -> Option<ProviderKey> {
        let (name, value) = match api {
            Api::Anthropic => ("x-api-key", secret.expose().to_string()),
            Api::OpenAi | Api::OpenAiResponses => {
                ("authorization", format!("Bearer {}", secret.expose()))
            }
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        // Keeps it out of any Debug output of the header map.
        value.set_sensitive(true);
        Some(ProviderKey {
            name: HeaderName::from_static(name),
            value,
            secret,
        })
    }

    pub fn holds(&self, s: &Secret) -> bool {
        self.secret == *s
    }
}

/// What one look at a key file calls for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// The file holds the key in use, or a problem already reported.
    Nothing,
    /// A new, good key: swap it in.
    Install(Secret),
    /// The file cannot be used; the key in use stays. Reported once per
    /// distinct problem, so a file that stays broken is one log line and
    /// one `failure`, not one a second.
    Reject(KeyProblem),
}

/// Decide what a read of a provider's key file means. `in_use` tells
/// whether a key is the one in use now; `reported` is the problem last
/// reported for this file, kept by the caller between looks.
pub fn decide(
    read: Result<Secret, KeyProblem>,
    in_use: impl Fn(&Secret) -> bool,
    reported: &mut Option<KeyProblem>,
) -> Action {
    match read {
        Ok(key) => {
            *reported = None;
            if in_use(&key) {
                Action::Nothing
            } else {
                Action::Install(key)
            }
        }
        Err(p) if reported.as_ref() == Some(&p) => Action::Nothing,
        Err(p) => {
            *reported = Some(p.clone());
            Action::Reject(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Secret {
        Secret::new(v.to_string())
    }

    #[test]
    fn keys_are_trimmed_and_must_be_header_safe() {
        assert_eq!(parse(b"sk-abc\n").unwrap().expose(), "sk-abc");
        assert_eq!(parse(b"  sk-abc \r\n\t").unwrap().expose(), "sk-abc");
        assert_eq!(parse(b""), Err(KeyProblem::Empty));
        assert_eq!(parse(b" \n\n"), Err(KeyProblem::Empty));
        for bad in [
            &b"sk-a\nsk-b"[..],
            b"sk a",
            b"sk-\x00",
            b"sk-\xc3\xa9",
            b"sk-\x7f",
        ] {
            assert_eq!(parse(bad), Err(KeyProblem::NotHeaderSafe), "{bad:?}");
        }
    }

    #[test]
    fn problems_never_quote_the_content() {
        let secret = "sk-very-secret";
        let problems = [
            parse(format!("{secret}\n{secret}").as_bytes()).unwrap_err(),
            parse(b"").unwrap_err(),
            read_file(Path::new("/definitely/not/here")).unwrap_err(),
        ];
        for p in problems {
            assert!(!p.to_string().contains(secret), "{p}");
        }
    }

    #[test]
    fn headers_by_dialect_are_sensitive() {
        let k = ProviderKey::new(Api::Anthropic, s("sk-1")).unwrap();
        assert_eq!(k.name, "x-api-key");
        assert_eq!(k.value, "sk-1");
        assert!(k.value.is_sensitive());
        assert!(k.holds(&s("sk-1")) && !k.holds(&s("sk-2")));
        assert!(!format!("{k:?}").contains("sk-1"));
        for api in [Api::OpenAi, Api::OpenAiResponses] {
            let k = ProviderKey::new(api, s("sk-1")).unwrap();
            assert_eq!(k.name, "authorization");
            assert_eq!(k.value, "Bearer sk-1");
        }
    }

    #[test]
    fn a_new_key_is_installed_and_a_broken_file_reported_once() {
        let mut reported = None;
        let in_use = |k: &Secret| k.expose() == "old";
        assert_eq!(decide(Ok(s("old")), in_use, &mut reported), Action::Nothing);
        assert_eq!(
            decide(Ok(s("new")), in_use, &mut reported),
            Action::Install(s("new"))
        );
        // Emptied: reported once while it stays empty.
        assert_eq!(
            decide(Err(KeyProblem::Empty), in_use, &mut reported),
            Action::Reject(KeyProblem::Empty)
        );
        assert_eq!(
            decide(Err(KeyProblem::Empty), in_use, &mut reported),
            Action::Nothing
        );
        // Another problem is news.
        let gone = KeyProblem::Unreadable("No such file or directory".into());
        assert_eq!(
            decide(Err(gone.clone()), in_use, &mut reported),
            Action::Reject(gone)
        );
        // Good again (the key in use never changed), then broken again: a
        // second report.
        assert_eq!(decide(Ok(s("old")), in_use, &mut reported), Action::Nothing);
        assert_eq!(reported, None);
        assert_eq!(
            decide(Err(KeyProblem::Empty), in_use, &mut reported),
            Action::Reject(KeyProblem::Empty)
        );
    }
}
