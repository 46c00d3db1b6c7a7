//! The `admin` section: the bearer token that state-changing calls of the
//! admin API need, read from an environment variable. Fails closed: a
//! named variable that is unset is an error, never "no token".

use super::{EnvLookup, Errors};
use crate::config::schema::AdminConf;
use crate::config::Secret;

/// Shorter tokens are refused: the admin listener is often on every
/// interface (probes, Prometheus), and a short token is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token; `None` when `token_env` is absent (loopback only). Not
/// meaningful once it has reported an error.
pub(super) fn admin(errs: &mut Errors, a: &AdminConf, env: &EnvLookup) -> Option<Secret> {
    let var = a.token_env.as_deref()?;
    if !super::providers::valid_env_name(var) {
        errs.push(
            "admin.token_env",
            format!("{var:?} is not a valid environment variable name"),
        );
        return None;
    }
    let value = env(var).map(|v| v.trim().to_string()).unwrap_or_default();
    if value.is_empty() {
        errs.push(
            "admin.token_env",
            format!(
                "environment variable {var} is not set (omit admin.token_env to accept \
                 state-changing admin calls from loopback only)"
            ),
        );
        return None;
    }
    if value.len() < MIN_TOKEN_LEN || !value.bytes().all(|b| b.is_ascii_graphic()) {
        errs.push(
            "admin.token_env",
            format!(
                "environment variable {var} must hold at least {MIN_TOKEN_LEN} printable \
                 ASCII characters without spaces (e.g. `openssl rand -hex 32`)"
            ),
        );
        return None;
    }
    Some(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(var: Option<&str>) -> (Option<Secret>, Vec<String>) {
        let env = |k: &str| match k {
            "GOOD" => Some(" 0123456789abcdef0123 \n".to_string()),
            "SHORT" => Some("abc".to_string()),
            "SPACED" => Some("0123456789 abcdef0123".to_string()),
            "BLANK" => Some("  ".to_string()),
            _ => None,
        };
        let mut errs = Errors(Vec::new());
        let conf = AdminConf {
            token_env: var.map(String::from),
        };
        let t = admin(&mut errs, &conf, &env);
        (t, errs.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn token_is_optional_trimmed_and_fails_closed() {
        assert_eq!(check(None), (None, vec![]));
        let (t, errs) = check(Some("GOOD"));
        assert_eq!(t.unwrap().expose(), "0123456789abcdef0123");
        assert!(errs.is_empty());
        for (var, want) in [
            ("UNSET", "environment variable UNSET is not set"),
            ("BLANK", "environment variable BLANK is not set"),
            ("SHORT", "at least 16"),
            ("SPACED", "without spaces"),
            ("1BAD", "not a valid environment variable name"),
        ] {
            let (t, errs) = check(Some(var));
            assert!(t.is_none(), "{var}");
            assert_eq!(errs.len(), 1, "{var}: {errs:?}");
            assert!(errs[0].starts_with("admin.token_env: "), "{errs:?}");
            assert!(errs[0].contains(want), "{var}: {errs:?}");
            // The value itself never appears in the error.
            assert!(!errs[0].contains("abc"), "{errs:?}");
        }
    }
}
