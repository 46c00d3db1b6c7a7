//! The `client_auth` section: the tokens clients must present, read from an
//! environment variable. Fails closed.

use super::{EnvLookup, Errors};
use crate::config::schema::ClientAuth;
use crate::config::Secret;

/// The accepted tokens; `None` when the section is absent (no client auth).
/// Not meaningful once it has reported an error.
pub(super) fn client_auth(
    errs: &mut Errors,
    ca: Option<&ClientAuth>,
    env: &EnvLookup,
) -> Option<Vec<Secret>> {
    match ca {
        None => None,
        Some(ca) => {
            if ca.tokens_env.is_empty() {
                errs.push("client_auth.tokens_env", "is required");
                None
            } else {
                let tokens: Vec<Secret> = env(&ca.tokens_env)
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| Secret::new(t.to_string()))
                    .collect();
                if tokens.is_empty() {
                    // Failing closed: an auth section with no tokens must not
                    // quietly become "no auth".
                    errs.push(
                        "client_auth.tokens_env",
                        format!(
                            "environment variable {} is not set or holds no tokens",
                            ca.tokens_env
                        ),
                    );
                }
                Some(tokens)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(var: &str) -> ClientAuth {
        ClientAuth {
            tokens_env: var.into(),
        }
    }

    #[test]
    fn tokens_are_split_trimmed_and_required() {
        let env = |k: &str| match k {
            "TOKENS" => Some(" t1, ,t2 ,".to_string()),
            "BLANK" => Some(" , ".to_string()),
            _ => None,
        };
        let mut errs = Errors(Vec::new());
        assert_eq!(client_auth(&mut errs, None, &env), None);
        let tokens = client_auth(&mut errs, Some(&section("TOKENS")), &env).unwrap();
        let tokens: Vec<&str> = tokens.iter().map(Secret::expose).collect();
        assert_eq!(tokens, ["t1", "t2"]);
        assert!(errs.0.is_empty());
        client_auth(&mut errs, Some(&section("")), &env);
        client_auth(&mut errs, Some(&section("BLANK")), &env);
        client_auth(&mut errs, Some(&section("UNSET")), &env);
        assert_eq!(errs.paths(), ["client_auth.tokens_env"; 3]);
        assert_eq!(errs.0[0].reason, "is required");
        assert_eq!(
            errs.0[2].reason,
            "environment variable UNSET is not set or holds no tokens"
        );
    }
}
