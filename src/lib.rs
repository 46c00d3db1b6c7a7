//! steadfast: a sidecar-grade failover proxy for LLM provider APIs, built on
//! Pingora. See README.md for usage and ../SPEC.md for the contract.

pub mod admin;
pub mod affinity;
pub mod app;
pub mod body;
pub mod clock;
pub mod config;
pub mod content;
pub mod credentials;
pub mod demo;
pub mod dialect;
pub mod edge;
pub mod forward;
pub mod headers;
pub mod health;
pub mod healthcheck;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mock;
pub mod otel;
pub mod outcome;
pub mod path;
pub mod provider;
pub mod proxy;
pub mod record;
pub mod resolver;
pub mod routing;
pub mod server;
pub mod sse;
pub mod stats;
pub mod telemetry;
pub mod tokens;
pub mod translate;
pub mod tunnel;
