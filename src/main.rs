//! The `steadfast` command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at startup. A background thread purges
/// freed pages on a timer, so memory goes back to the OS after a burst (a
/// connection flood) even when no further allocation happens; one second
/// of decay keeps recently freed pages for reuse under steady load.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

#[derive(Parser)]
#[command(
    name = "steadfast",
    version,
    about = "Sidecar-grade failover proxy for LLM provider APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Config file (default: $STEADFAST_CONFIG, else conf/steadfast.yaml, else the built-in default).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Take the listening sockets over from a running instance (server.upgrade_sock).
        #[arg(long)]
        upgrade: bool,
        /// Run in the background.
        #[arg(long)]
        daemon: bool,
    },
    /// Validate a config file; print every error as path.to.key: reason.
    Check {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// GET a health URL; exit 0 on 2xx, else 1 (for Docker HEALTHCHECK).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:9090/health")]
        url: String,
    },
    /// Disable, enable or list providers of a running instance (admin API).
    Provider {
        #[command(subcommand)]
        command: steadfast::control::cli::ProviderCommand,
    },
    /// Self-contained demo: mock providers (one failing) + the proxy, explained.
    Demo,
    /// Mock LLM provider for demos, tests and benchmarks.
    MockProvider(Box<steadfast::mock::MockArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve {
            config,
            upgrade,
            daemon,
        } => steadfast::server::run(steadfast::server::ServeOptions {
            config,
            upgrade,
            daemon,
        }),
        Command::Check { config } => check(config),
        Command::Healthcheck { url } => steadfast::healthcheck::run(&url),
        Command::Provider { command } => steadfast::control::cli::run(command),
        Command::Demo => steadfast::demo::run(),
        Command::MockProvider(args) => steadfast::mock::run_cli(*args),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn check(config: Option<PathBuf>) -> i32 {
    let (source, loaded) = steadfast::server::load_config(config.as_deref());
    match loaded {
        Ok(cfg) => {
            println!(
                "{}: ok ({} providers, {} routes)",
                source.describe(),
                cfg.providers.len(),
                cfg.routes.len()
            );
            0
        }
        Err(errs) => {
            eprintln!("{}: {} error(s)", source.describe(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            1
        }
    }
}
