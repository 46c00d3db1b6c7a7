//! The `routes` list: which paths a route serves, its strategy, and the
//! providers it fails over between: all of one dialect, or, with
//! `translate: true`, of dialects its clients' requests translate to.

use super::Errors;
use crate::config::schema::{ProviderConf, RouteConf};
use crate::config::{Affinity, Api, ProviderSettings, RouteSettings, Strategy};
use std::collections::HashSet;

/// Routes point into `providers`, the valid ones. `declared` is every
/// provider in the file, so that a route naming an invalid provider is not
/// reported a second time as naming an unknown one.
pub(super) fn routes(
    errs: &mut Errors,
    list: &[RouteConf],
    providers: &[ProviderSettings],
    declared: &[ProviderConf],
) -> Vec<RouteSettings> {
    let mut routes = Vec::new();
    let mut route_names = HashSet::new();
    if list.is_empty() {
        errs.push("routes", "at least one route is required");
    }
    for (i, r) in list.iter().enumerate() {
        let path = format!("routes[{i}]");
        if r.name.is_empty() {
            errs.push(format!("{path}.name"), "is required");
        } else if !route_names.insert(r.name.as_str()) {
            errs.push(
                format!("{path}.name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
        if r.paths.is_empty() {
            errs.push(format!("{path}.paths"), "at least one path is required");
        }
        for (j, p) in r.paths.iter().enumerate() {
            if !p.starts_with('/') {
                errs.push(format!("{path}.paths[{j}]"), "must start with '/'");
            } else if crate::path::normalise(p).map_or(true, |n| n != p.as_str()) {
                // Requests are matched after normalisation: this would never match.
                errs.push(
                    format!("{path}.paths[{j}]"),
                    "must be a normalised path (no '.', '..' or empty segments, no '\\', \
                     percent-encoding only where needed, in upper-case hex)",
                );
            }
        }
        let strategy = match r.strategy.as_deref() {
            None | Some("priority") => Strategy::Priority,
            Some("round_robin") => Strategy::RoundRobin,
            Some("weighted") => Strategy::Weighted,
            Some("least_latency") => Strategy::LeastLatency,
            Some(other) => {
                errs.push(
                    format!("{path}.strategy"),
                    format!("unknown strategy {other:?}; expected priority, round_robin, weighted or least_latency"),
                );
                Strategy::Priority
            }
        };
        let affinity = match r.affinity.as_deref() {
            None | Some("off") => Affinity::Off,
            Some("session") => Affinity::Session,
            Some(other) => {
                errs.push(
                    format!("{path}.affinity"),
                    format!("unknown affinity {other:?}; expected off or session"),
                );
                Affinity::Off
            }
        };
        if r.providers.is_empty() {
            errs.push(
                format!("{path}.providers"),
                "at least one provider is required",
            );
        }
        let mut idxs = Vec::new();
        let mut seen = HashSet::new();
        for (j, name) in r.providers.iter().enumerate() {
            if !seen.insert(name.as_str()) {
                errs.push(
                    format!("{path}.providers[{j}]"),
                    format!("provider {name:?} is listed twice"),
                );
                continue;
            }
            match providers
                .iter()
                .position(|p: &ProviderSettings| &p.name == name)
            {
                Some(idx) => idxs.push(idx),
                None if declared.iter().any(|p| &p.name == name) => {} // invalid provider, already reported
                None => errs.push(
                    format!("{path}.providers[{j}]"),
                    format!("unknown provider {name:?}"),
                ),
            }
        }
        let api = if r.translate {
            translated_dialect(errs, &path, r, &idxs, providers)
        } else {
            same_dialect(errs, &path, &idxs, providers)
        };
        if let (Some(api), false) = (api, idxs.is_empty()) {
            routes.push(RouteSettings {
                name: r.name.clone(),
                paths: r.paths.clone(),
                strategy,
                api,
                providers: idxs,
                translate: r.translate,
                affinity,
            });
        }
    }
    routes
}

/// Without `translate` requests are forwarded unchanged, so the route's
/// providers must all speak one api; the clients speak it too.
fn same_dialect(
    errs: &mut Errors,
    path: &str,
    idxs: &[usize],
    providers: &[ProviderSettings],
) -> Option<Api> {
    let first = providers[*idxs.first()?].api;
    let mut apis: Vec<&str> = idxs.iter().map(|&i| providers[i].api.as_str()).collect();
    apis.sort_unstable();
    apis.dedup();
    if apis.len() > 1 {
        errs.push(
            format!("{path}.providers"),
            format!(
                "mixes {} providers; requests are forwarded unchanged, so every provider of a route must speak the same api (or set translate: true)",
                apis.join(" and ")
            ),
        );
    }
    Some(first)
}

/// With `translate`, the clients' dialect is the one the route's paths name
/// (the client chooses the endpoint it calls; the provider order may
/// change, so the first provider's api would be the wrong witness), and
/// every provider must speak it or a dialect it translates to.
fn translated_dialect(
    errs: &mut Errors,
    path: &str,
    r: &RouteConf,
    idxs: &[usize],
    providers: &[ProviderSettings],
) -> Option<Api> {
    let mut client: Option<Api> = None;
    let mut ok = true;
    for (j, p) in r.paths.iter().enumerate() {
        match Api::of_endpoint(p) {
            None => {
                ok = false;
                errs.push(
                    format!("{path}.paths[{j}]"),
                    format!(
                        "a route with translate: true must name the endpoint its clients call: a path ending in {}, {} or {}",
                        Api::Anthropic.endpoint(),
                        Api::OpenAi.endpoint(),
                        Api::OpenAiResponses.endpoint()
                    ),
                );
            }
            Some(a) if client.is_some_and(|c| c != a) => {
                ok = false;
                errs.push(
                    format!("{path}.paths[{j}]"),
                    "names another dialect's endpoint than the route's first path; a translated route serves one client dialect: split it into two routes",
                );
            }
            Some(a) => client = Some(a),
        }
    }
    let client = client.filter(|_| ok)?;
    for (j, name) in r.providers.iter().enumerate() {
        let Some(p) = providers.iter().find(|p| &p.name == name) else {
            continue;
        };
        if p.api != client
            && crate::translate::supported(client, p.api)
            && p.key.is_none()
            && p.kind == crate::config::ProviderKind::Direct
        {
            // Translated attempts never carry the client's credentials: a
            // key for one vendor must not reach another.
            errs.push(
                format!("{path}.providers[{j}]"),
                format!(
                    "provider {name:?} speaks {} and this route's clients speak {}: it needs a key of its own (api_key_env), since a client's key is never sent to another vendor",
                    p.api.as_str(),
                    client.as_str()
                ),
            );
        }
        if p.api != client && !crate::translate::supported(client, p.api) {
            errs.push(
                format!("{path}.providers[{j}]"),
                format!(
                    "provider {name:?} speaks {}, and {} requests do not translate to it; translation goes anthropic to openai or openai_responses, and openai to anthropic",
                    p.api.as_str(),
                    client.as_str()
                ),
            );
        }
    }
    (!idxs.is_empty()).then_some(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TimeoutSettings, UpstreamAddr};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn valid(name: &str, api: Api) -> ProviderSettings {
        let t = Duration::from_secs(1);
        ProviderSettings {
            name: name.into(),
            api,
            kind: crate::config::ProviderKind::Direct,
            base_url: "http://127.0.0.1:1".into(),
            upstream: UpstreamAddr {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1,
                path_prefix: String::new(),
            },
            key: Some(crate::config::Secret::new("k".into())),
            key_file: None,
            weight: 1,
            max_inflight: None,
            models: BTreeMap::new(),
            timeouts: TimeoutSettings {
                connect: t,
                response_header: t,
                response_header_stream: t,
                first_content: t,
                stream_idle: t,
                total: t,
            },
            health_check: None,
            anthropic_beta: Default::default(),
            prefill: crate::config::Prefill::Auto,
        }
    }

    fn declared(name: &str) -> ProviderConf {
        ProviderConf {
            name: name.into(),
            ..ProviderConf::default()
        }
    }

    fn route(name: &str, strategy: Option<&str>, providers: &[&str]) -> RouteConf {
        RouteConf {
            name: name.into(),
            paths: vec!["/v1/messages".into()],
            strategy: strategy.map(Into::into),
            providers: providers.iter().map(|p| p.to_string()).collect(),
            translate: false,
            affinity: None,
        }
    }

    fn translated(paths: &[&str], providers: &[&str]) -> RouteConf {
        RouteConf {
            name: format!("t{}", paths.join("+")),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            strategy: None,
            providers: providers.iter().map(|p| p.to_string()).collect(),
            translate: true,
            affinity: None,
        }
    }

    #[test]
    fn a_translated_route_takes_its_dialect_from_its_paths() {
        let providers = [
            valid("o", Api::OpenAi),
            valid("a", Api::Anthropic),
            valid("r", Api::OpenAiResponses),
        ];
        let decl = [declared("o"), declared("a"), declared("r")];
        let mut errs = Errors(Vec::new());
        // The first provider speaks openai, yet the clients call Messages.
        let list = [
            translated(&["/v1/messages"], &["o", "a", "r"]),
            translated(
                &["/v1/chat/completions", "/team/v1/chat/completions"],
                &["a", "o"],
            ),
        ];
        let got = routes(&mut errs, &list, &providers, &decl);
        assert!(errs.0.is_empty(), "{:?}", errs.0);
        assert_eq!(got[0].api, Api::Anthropic);
        assert!(got[0].translate);
        assert_eq!(got[0].providers, [0, 1, 2]);
        assert_eq!(got[1].api, Api::OpenAi);
    }

    #[test]
    fn a_translated_route_needs_one_endpoint_dialect_and_reachable_providers() {
        let providers = [
            valid("o", Api::OpenAi),
            valid("a", Api::Anthropic),
            valid("r", Api::OpenAiResponses),
        ];
        let decl = [declared("o"), declared("a"), declared("r")];
        let mut errs = Errors(Vec::new());
        let list = [
            translated(&["/v1"], &["a", "o"]),
            translated(&["/v1/messages", "/v1/chat/completions"], &["a", "o"]),
            translated(&["/v1/chat/completions"], &["o", "r"]),
            translated(&["/v1/responses"], &["r", "a"]),
            translated(&["/v1/messagesx"], &["a"]),
        ];
        let got = routes(&mut errs, &list, &providers, &decl);
        // Every error is reported; the file is rejected as a whole.
        assert_eq!(got.len(), 2);
        assert_eq!(
            errs.paths(),
            [
                "routes[0].paths[0]",
                "routes[1].paths[1]",
                "routes[2].providers[1]",
                "routes[3].providers[1]",
                "routes[4].paths[0]",
            ]
        );
        assert!(errs.0[0].reason.contains("/v1/chat/completions"));
        assert!(errs.0[1].reason.contains("split it into two routes"));
        assert!(
            errs.0[2].reason.contains("speaks openai_responses"),
            "{}",
            errs.0[2].reason
        );
    }

    #[test]
    fn without_translate_any_two_apis_are_a_mix() {
        let providers = [valid("o", Api::OpenAi), valid("r", Api::OpenAiResponses)];
        let decl = [declared("o"), declared("r")];
        let mut errs = Errors(Vec::new());
        let got = routes(
            &mut errs,
            &[route("m", None, &["o", "r"])],
            &providers,
            &decl,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(errs.paths(), ["routes[0].providers"]);
        assert!(errs.0[0]
            .reason
            .starts_with("mixes openai and openai_responses providers"));
        assert!(errs.0[0].reason.contains("translate: true"));
    }

    #[test]
    fn routes_point_into_the_valid_providers() {
        let providers = [valid("a", Api::OpenAi), valid("b", Api::OpenAi)];
        let decl = [declared("a"), declared("broken"), declared("b")];
        let mut errs = Errors(Vec::new());
        let list = [
            route("r1", None, &["b", "a"]),
            route("r2", Some("least_latency"), &["a"]),
        ];
        let got = routes(&mut errs, &list, &providers, &decl);
        assert!(errs.0.is_empty());
        assert_eq!(got[0].providers, [1, 0]);
        assert_eq!(got[0].strategy, Strategy::Priority);
        assert_eq!(got[0].api, Api::OpenAi);
        assert_eq!(got[1].strategy, Strategy::LeastLatency);
        // An invalid provider was reported by its own section; naming it here
        // adds nothing, and the route keeps the providers that are valid.
        let got = routes(
            &mut errs,
            &[route("r", None, &["broken", "a"])],
            &providers,
            &decl,
        );
        assert!(errs.0.is_empty());
        assert_eq!(got[0].providers, [0]);
    }

    #[test]
    fn route_problems_are_reported_per_key() {
        let providers = [valid("a", Api::Anthropic), valid("o", Api::OpenAi)];
        let decl = [declared("a"), declared("o")];
        let mut errs = Errors(Vec::new());
        assert!(routes(&mut errs, &[], &providers, &decl).is_empty());
        assert_eq!(errs.paths(), ["routes"]);
        let mut errs = Errors(Vec::new());
        let mut no_paths = route("", Some("fastest"), &[]);
        no_paths.paths.clear();
        let mut bad_path = route("r", None, &["a", "ghost", "a"]);
        bad_path.paths.push("v1".into());
        let list = [
            no_paths,
            bad_path,
            route("r", None, &["a"]),
            route("mixed", None, &["a", "o"]),
        ];
        let got = routes(&mut errs, &list, &providers, &decl);
        assert_eq!(got.len(), 3, "a route with no valid provider is dropped");
        assert_eq!(
            errs.paths(),
            [
                "routes[0].name",
                "routes[0].paths",
                "routes[0].strategy",
                "routes[0].providers",
                "routes[1].paths[1]",
                "routes[1].providers[1]",
                "routes[1].providers[2]",
                "routes[2].name",
                "routes[3].providers",
            ]
        );
        assert_eq!(errs.0[5].reason, "unknown provider \"ghost\"");
        assert_eq!(errs.0[6].reason, "provider \"a\" is listed twice");
        assert_eq!(errs.0[7].reason, "duplicate route name \"r\"");
    }

    #[test]
    fn affinity_is_off_unless_set_to_session() {
        let providers = [valid("a", Api::Anthropic), valid("b", Api::Anthropic)];
        let decl = [declared("a"), declared("b")];
        let mut errs = Errors(Vec::new());
        let mut on = route("on", Some("round_robin"), &["a", "b"]);
        on.affinity = Some("session".into());
        let mut off = route("off", None, &["a"]);
        off.affinity = Some("off".into());
        let mut typo = route("typo", None, &["b"]);
        typo.affinity = Some("sessions".into());
        let list = [route("default", None, &["a"]), on, off, typo];
        let got = routes(&mut errs, &list, &providers, &decl);
        let affinity: Vec<Affinity> = got.iter().map(|r| r.affinity).collect();
        assert_eq!(
            affinity,
            [
                Affinity::Off,
                Affinity::Session,
                Affinity::Off,
                Affinity::Off
            ]
        );
        assert_eq!(errs.paths(), ["routes[3].affinity"]);
        assert_eq!(
            errs.0[0].reason,
            "unknown affinity \"sessions\"; expected off or session"
        );
    }
}
