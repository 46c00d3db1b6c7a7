//! pingora-baseline LISTEN THREADS UPSTREAM SSE_UPSTREAM HOLD_UPSTREAM
//!
//! Pingora's stock `http_proxy_service` with an `upstream_peer` that picks
//! the upstream by path prefix (/sse/, /hold/, anything else) and nothing
//! else: no failover, no metrics, no body handling of its own. Upstream
//! connections are pooled by Pingora.

use async_trait::async_trait;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::{ProxyHttp, Session};

struct Baseline {
    up: String,
    sse: String,
    hold: String,
}

#[async_trait]
impl ProxyHttp for Baseline {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let path = s.req_header().uri.path();
        let addr = if path.starts_with("/sse/") {
            &self.sse
        } else if path.starts_with("/hold/") {
            &self.hold
        } else {
            &self.up
        };
        Ok(Box::new(HttpPeer::new(addr.as_str(), false, String::new())))
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 5 {
        eprintln!("usage: pingora-baseline LISTEN THREADS UPSTREAM SSE_UPSTREAM HOLD_UPSTREAM");
        std::process::exit(2);
    }
    let conf = ServerConf {
        threads: a[1].parse().expect("THREADS"),
        // PINGORA_WORK_STEALING=0: one single-threaded runtime per thread
        // (for experiments; the default, like steadfast's, is work stealing).
        work_stealing: std::env::var("PINGORA_WORK_STEALING").map_or(true, |v| v != "0"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(
        &server.configuration,
        Baseline {
            up: a[2].clone(),
            sse: a[3].clone(),
            hold: a[4].clone(),
        },
    );
    // PINGORA_L4_READ_BUF=N: the downstream read buffer (Pingora's default
    // is 64 KiB per connection), for memory-per-stream experiments.
    match std::env::var("PINGORA_L4_READ_BUF")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => svc.add_listener(
            ListenerConfig::tcp(a[0].as_str()).l4_buffer(L4BufferSettings::default().read(n)),
        ),
        None => svc.add_tcp(&a[0]),
    }
    server.add_service(svc);
    println!("pingora-baseline listening on {}", a[0]);
    server.run_forever();
}
