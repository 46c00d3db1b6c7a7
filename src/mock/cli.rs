//! `steadfast mock-provider`: command-line flags, running a mock until
//! SIGTERM/SIGINT.

use super::wire::valid_header_value;
use super::{Behavior, MockApi, MockConfig, MockServer};
use std::io;
use std::net::SocketAddr;

/// `steadfast mock-provider --listen ADDR [--api anthropic|openai] [--name NAME] [fault flags]`
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Wire dialect: decides the error format and the model list.
    #[arg(long, default_value = "anthropic", value_parser = ["anthropic", "openai"])]
    pub api: String,
    /// Name reported in answers and in the x-mock-provider header.
    #[arg(long, default_value = "mock")]
    pub name: String,
    /// 200 = normal answers; anything else = that error status.
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Retry-After header value to send.
    #[arg(long, value_name = "VALUE")]
    pub retry_after: Option<String>,
    /// Extra response header, "name: value" (repeatable).
    #[arg(long, value_name = "NAME: VALUE")]
    pub header: Vec<String>,
    /// Delay before response headers.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,
    /// Read each request and never answer.
    #[arg(long)]
    pub stall_before_headers: bool,
    /// Read each request, then reset the connection (RST).
    #[arg(long)]
    pub reset: bool,
    /// Read each request, then close the connection (FIN) without answering.
    #[arg(long)]
    pub close_without_response: bool,
    /// Content delta events per SSE stream.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub events: usize,
    /// Delay between SSE events.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub event_delay_ms: u64,
    /// SSE: go silent (connection kept open) after N deltas.
    #[arg(long, value_name = "N")]
    pub stall_mid_stream_after: Option<usize>,
    /// SSE: reset the connection after N deltas.
    #[arg(long, value_name = "N")]
    pub cut_mid_stream_after: Option<usize>,
    /// JSON: send only this many body bytes, then reset.
    #[arg(long, value_name = "BYTES")]
    pub cut_body_after_bytes: Option<usize>,
    /// Input tokens reported in usage.
    #[arg(long, default_value_t = 11, value_name = "N")]
    pub input_tokens: u64,
    /// Output tokens reported in usage.
    #[arg(long, default_value_t = 7, value_name = "N")]
    pub output_tokens: u64,
    /// Extra padding bytes in the answer text.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub body_size: usize,
    /// SSE: send an error event after N content deltas (0 = before any
    /// content, inside the 200) and end the stream.
    #[arg(long, value_name = "N")]
    pub error_event_after: Option<usize>,
    /// Anthropic error type of that event.
    #[arg(long, default_value = "overloaded_error", value_name = "TYPE")]
    pub error_event_type: String,
    /// Answer 200 with no content (empty message or empty stream).
    #[arg(long)]
    pub empty: bool,
    /// SSE: keep-alives only for this long before the first content.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub pings_before_content_ms: u64,
}

impl MockArgs {
    pub fn to_config(&self) -> Result<MockConfig, String> {
        let api = match self.api.to_ascii_lowercase().as_str() {
            "anthropic" => MockApi::Anthropic,
            "openai" => MockApi::OpenAi,
            other => {
                return Err(format!(
                    "--api: unknown dialect {other:?} (anthropic|openai)"
                ))
            }
        };
        if self.name.is_empty() || !valid_header_value(&self.name) {
            return Err(format!(
                "--name: {:?} cannot be sent as a header value",
                self.name
            ));
        }
        let mut extra_headers = Vec::with_capacity(self.header.len());
        for h in &self.header {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("--header: {h:?} is not \"name: value\""))?;
            extra_headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let behavior = Behavior {
            status: self.status,
            retry_after: self.retry_after.clone(),
            extra_headers,
            latency_ms: self.latency_ms,
            stall_before_headers: self.stall_before_headers,
            reset: self.reset,
            close_without_response: self.close_without_response,
            events: self.events,
            event_delay_ms: self.event_delay_ms,
            stall_mid_stream_after: self.stall_mid_stream_after,
            cut_mid_stream_after: self.cut_mid_stream_after,
            cut_body_after_bytes: self.cut_body_after_bytes,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            body_size: self.body_size,
            error_event_after: self.error_event_after,
            error_event_type: self.error_event_type.clone(),
            empty: self.empty,
            pings_before_content_ms: self.pings_before_content_ms,
            ..Behavior::default()
        };
        behavior.validate()?;
        Ok(MockConfig {
            api,
            name: self.name.clone(),
            behavior,
        })
    }
}

/// Runs until SIGTERM/SIGINT; prints `mock-provider <name> listening on
/// <addr>` to stdout once bound. Returns the process exit code.
pub fn run_cli(args: MockArgs) -> i32 {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mock-provider: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock-provider: cannot start runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        // Handlers go in before the "listening" line: a test that signals as
        // soon as it reads the line must not hit the default (kill) action.
        let signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mock-provider: cannot install signal handlers: {e}");
                return 1;
            }
        };
        let name = cfg.name.clone();
        let server = match MockServer::start(args.listen, cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mock-provider: cannot listen on {}: {e}", args.listen);
                return 1;
            }
        };
        {
            use std::io::Write as _;
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "mock-provider {name} listening on {}", server.addr());
            let _ = out.flush();
        }
        signals.wait().await;
        server.stop().await;
        0
    })
}

#[cfg(unix)]
struct Signals(tokio::signal::unix::Signal, tokio::signal::unix::Signal);

#[cfg(unix)]
impl Signals {
    fn new() -> io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals(
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.0.recv() => {}
            _ = self.1.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> io::Result<Signals> {
        Ok(Signals)
    }

    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockArgs,
    }

    #[test]
    fn cli_flags_map_to_behavior() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "openai",
            "--name",
            "p9",
            "--status",
            "429",
            "--retry-after",
            "5",
            "--header",
            "x-a: 1",
            "--header",
            "x-b:2",
            "--latency-ms",
            "10",
            "--events",
            "2",
            "--cut-mid-stream-after",
            "1",
            "--body-size",
            "100",
            "--reset",
        ])
        .unwrap();
        let cfg = cli.mock.to_config().unwrap();
        assert_eq!(cfg.api, MockApi::OpenAi);
        assert_eq!(cfg.name, "p9");
        let b = cfg.behavior;
        assert_eq!(b.status, 429);
        assert_eq!(b.retry_after.as_deref(), Some("5"));
        assert_eq!(
            b.extra_headers,
            vec![("x-a".into(), "1".into()), ("x-b".into(), "2".into())]
        );
        assert_eq!(
            (b.latency_ms, b.events, b.cut_mid_stream_after, b.body_size),
            (10, 2, Some(1), 100)
        );
        assert!(b.reset && !b.stall_before_headers);
        let d = Cli::try_parse_from(["x", "--listen", "127.0.0.1:0"])
            .unwrap()
            .mock
            .to_config()
            .unwrap();
        assert_eq!(d.api, MockApi::Anthropic);
        assert_eq!(d.name, "mock");
        assert_eq!(d.behavior, Behavior::default());
        assert!(Cli::try_parse_from(["x", "--listen", "127.0.0.1:0", "--api", "gemini"]).is_err());
        assert!(Cli::try_parse_from(["x"]).is_err());
        let bad =
            Cli::try_parse_from(["x", "--listen", "127.0.0.1:0", "--header", "nocolon"]).unwrap();
        assert!(bad.mock.to_config().is_err());
        let bad = Cli::try_parse_from(["x", "--listen", "127.0.0.1:0", "--status", "42"]).unwrap();
        assert!(bad.mock.to_config().is_err());
    }
}
