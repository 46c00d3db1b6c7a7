//! steadfast: a sidecar-grade failover proxy for LLM provider APIs, built on
//! Pingora.
//!
//! The crate is the `steadfast` binary's library: every module below owns
//! one job (the module map is in `docs/architecture.md`). How to use and
//! operate it is in `README.md` and `docs/`; the external contract (CLI,
//! config, statuses, headers, endpoints, metrics, log events, signals) is
//! `docs/reference.md`.

pub mod admin;
pub mod affinity;
pub mod app;
pub mod body;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod content;
pub mod control;
pub mod credentials;
pub mod demo;
pub mod dialect;
pub mod edge;
pub mod forward;
pub mod gauges;
pub mod headers;
pub mod health;
pub mod healthcheck;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mock;
pub mod name_cache;
pub mod otel;
pub mod outcome;
pub mod path;
pub mod provider;
pub mod proxy;
pub mod record;
pub mod resolver;
pub mod resume;
pub mod routing;
pub mod server;
pub mod sse;
pub mod stats;
pub mod telemetry;
pub mod tokens;
pub mod translate;
pub mod tunnel;
