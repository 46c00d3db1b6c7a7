//! The `routes` list: which paths a route serves, its strategy, and the
//! providers it fails over between, all of one dialect.

use super::Errors;
use crate::config::schema::{ProviderConf, RouteConf};
use crate::config::{Api, ProviderSettings, RouteSettings, Strategy};
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
        let apis: HashSet<Api> = idxs.iter().map(|&i| providers[i].api).collect();
        if apis.len() > 1 {
            errs.push(
                format!("{path}.providers"),
                "mixes anthropic and openai providers; requests are forwarded unchanged, so every provider of a route must speak the same api",
            );
        }
        if let Some(&first) = idxs.first() {
            routes.push(RouteSettings {
                name: r.name.clone(),
                paths: r.paths.clone(),
                strategy,
                api: providers[first].api,
                providers: idxs,
            });
        }
    }
    routes
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
            key: None,
            weight: 1,
            max_inflight: None,
            models: BTreeMap::new(),
            timeouts: TimeoutSettings {
                connect: t,
                response_header: t,
                response_header_stream: t,
                stream_idle: t,
                total: t,
            },
            health_check: None,
            anthropic_beta: Default::default(),
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
        }
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
}
