//! Mock LLM provider for integration tests, `steadfast demo` and benchmarks.
//!
//! It speaks just enough HTTP/1.1 (hand-rolled on tokio) to look like the
//! Anthropic Messages and OpenAI Chat Completions / Responses APIs, and can be
//! told to fail in every way the proxy has to survive: error statuses,
//! latency, stalls, resets and streams cut in the middle. A generic HTTP
//! server would hide exactly the socket-level behaviour these faults need, and
//! would cost more per request than a benchmark target should.
//!
//! Layout, one job per file: this module holds the public handle
//! ([`MockServer`]) and the types tests configure it with; `behavior` the
//! fault switchboard ([`Behavior`]); `server` the accept loop and what each
//! request gets answered; `wire` HTTP/1.1 request parsing and response heads;
//! `bodies` the JSON and SSE bodies of the three wire dialects; `control` the
//! `/_mock/*` endpoints; `cli` the `steadfast mock-provider` command.

use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Infallible formatting into a Vec: `io::Write` for `Vec<u8>` never fails.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = ::std::io::Write::write_fmt($out, format_args!($($arg)*));
    }};
}

mod behavior;
mod bodies;
mod cli;
mod control;
mod server;
#[cfg(test)]
mod tests;
mod wire;

pub use behavior::Behavior;
pub use cli::{run_cli, MockArgs};

use server::accept_loop;
use wire::valid_header_value;

const MAX_RECORDED: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockApi {
    Anthropic,
    OpenAi,
}

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub api: MockApi,
    pub name: String,
    pub behavior: Behavior,
}

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent, query string included.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RecordedRequest {
    /// First header of that name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    api: MockApi,
    name: String,
    // An Arc inside so each request takes a cheap snapshot instead of cloning
    // the header vectors.
    behavior: RwLock<Arc<Behavior>>,
    requests: AtomicUsize,
    recorded: Mutex<VecDeque<RecordedRequest>>,
}

impl Shared {
    fn behavior(&self) -> Arc<Behavior> {
        // A poisoned lock only means a test panicked elsewhere; the value is intact.
        self.behavior
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, r: RecordedRequest) {
        let mut q = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_RECORDED {
            q.pop_front();
        }
        q.push_back(r);
    }
}

pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // Dropping the sender (with the MockServer) also stops the server, so a
    // forgotten mock does not keep its port for the rest of the runtime.
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Bind and serve in the background on the current tokio runtime. `addr`
    /// may use port 0.
    pub async fn start(addr: SocketAddr, cfg: MockConfig) -> io::Result<MockServer> {
        if !valid_header_value(&cfg.name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mock name must be a valid header value",
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            api: cfg.api,
            name: cfg.name,
            behavior: RwLock::new(Arc::new(cfg.behavior)),
            requests: AtomicUsize::new(0),
            recorded: Mutex::new(VecDeque::with_capacity(MAX_RECORDED)),
        });
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), rx));
        Ok(MockServer {
            addr,
            shared,
            shutdown: tx,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_behavior(&self, b: Behavior) {
        *self
            .shared
            .behavior
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(b);
    }

    pub fn behavior(&self) -> Behavior {
        (*self.shared.behavior()).clone()
    }

    /// Requests received, control endpoints and malformed requests excluded.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The last 64 requests, oldest first, bodies included.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        let q = self
            .shared
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect()
    }

    pub fn reset_counters(&self) {
        reset_counters(&self.shared);
    }

    /// Stop like a killed process: close the listener and abort every open
    /// connection, in-flight responses included, so that the port can be
    /// re-bound at once by a new `MockServer::start`.
    pub async fn stop(self) {
        let MockServer { shutdown, task, .. } = self;
        let _ = shutdown.send(());
        let _ = task.await;
    }
}

fn reset_counters(shared: &Shared) {
    shared.requests.store(0, Ordering::SeqCst);
    shared
        .recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("requests", &self.requests())
            .finish()
    }
}
