//! Byte tunnels between a client and a provider after an HTTP/1.1 upgrade
//! (WebSocket): both directions are copied independently, as they arrive,
//! without looking at frames. Owns how a tunnel ends: a side closing (its
//! FIN is passed on, the other side gets a short grace to follow), a side
//! breaking, no byte either way for the idle timeout, or the process
//! draining ([`close_all`]).
//!
//! The two directions never wait on each other: a client that is busy
//! sending while not reading cannot stall what the provider sends it, so a
//! tunnel behaves like the direct connection it stands in for.

use bytes::Bytes;
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// Read size of each direction: one buffer per direction per tunnel.
const BUF: usize = 8 * 1024;
/// After one side has closed, how long the other may take to close too
/// (a WebSocket peer closes right after the closing handshake); a peer
/// that ignores the close must not hold the tunnel for the idle timeout.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Bound on passing the close on to both sides when a tunnel is cut: a
/// peer that stopped reading must not delay the end (or a drain).
const CLOSE_WRITE_LIMIT: Duration = Duration::from_millis(200);

/// Set once the process is about to exit: every tunnel, open or opening,
/// ends at once.
static CLOSING: Lazy<watch::Sender<bool>> = Lazy::new(|| watch::channel(false).0);

/// End every tunnel now (the drain deadline is near). Tunnels opened later
/// end as soon as they start.
pub fn close_all() {
    CLOSING.send_replace(true);
}

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    FromClient,
    FromUpstream,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::FromClient => "from_client",
            Direction::FromUpstream => "from_upstream",
        }
    }
}

/// How an established tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// The client closed (or reset) its connection first.
    ClientClosed,
    /// The provider closed its connection first.
    UpstreamClosed,
    /// The provider's connection broke (reset, failed write).
    UpstreamError,
    /// No byte either way for the idle timeout.
    IdleTimeout,
    /// Cut because the process was shutting down.
    Shutdown,
}

impl TunnelEnd {
    pub const ALL: [TunnelEnd; 5] = [
        TunnelEnd::ClientClosed,
        TunnelEnd::UpstreamClosed,
        TunnelEnd::UpstreamError,
        TunnelEnd::IdleTimeout,
        TunnelEnd::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TunnelEnd::ClientClosed => "client_closed",
            TunnelEnd::UpstreamClosed => "upstream_closed",
            TunnelEnd::UpstreamError => "upstream_error",
            TunnelEnd::IdleTimeout => "idle_timeout",
            TunnelEnd::Shutdown => "shutdown",
        }
    }
}

/// What a finished tunnel reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub end: TunnelEnd,
    /// Key-free description of a failure, when a side broke.
    pub detail: Option<String>,
    pub from_client: u64,
    pub from_upstream: u64,
}

/// Byte counts and the time of the last byte, shared by both directions
/// and the idle watch (all in one task: atomics only to stay `Sync`).
struct Activity {
    idle: Duration,
    start: Instant,
    last_ms: AtomicU64,
    from_client: AtomicU64,
    from_upstream: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn add(&self, dir: Direction, n: usize) {
        let counter = match dir {
            Direction::FromClient => &self.from_client,
            Direction::FromUpstream => &self.from_upstream,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A failed direction: which end failed, and how.
#[derive(Debug)]
enum Fault {
    /// Reading from the direction's source failed.
    Read(std::io::Error),
    /// Writing to the direction's destination failed.
    Write(std::io::Error),
}

/// Write and flush one chunk. A destination that takes nothing for
/// `limit` has stopped reading: that ends the tunnel, as a client that
/// stops reading ends an HTTP stream.
async fn send<W>(w: &mut W, data: &[u8], limit: Duration) -> Result<(), Fault>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let write = async {
        w.write_all(data).await?;
        // Transport streams buffer writes: a WebSocket message must leave
        // now, not when the buffer fills.
        w.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(r) => r.map_err(Fault::Write),
        Err(_) => Err(Fault::Write(std::io::ErrorKind::TimedOut.into())),
    }
}

/// Copy one direction until its source closes, then pass the close on.
/// `prefix` is what the source sent before the tunnel started (bytes an
/// HTTP parser had already buffered); it goes first.
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    prefix: Bytes,
    dir: Direction,
    act: &Activity,
    count: &(dyn Fn(Direction, u64) + Sync),
) -> Result<(), Fault>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    if !prefix.is_empty() {
        send(w, &prefix, act.idle).await?;
        act.add(dir, prefix.len());
        count(dir, prefix.len() as u64);
    }
    let mut buf = vec![0u8; BUF];
    loop {
        let n = r.read(&mut buf).await.map_err(Fault::Read)?;
        if n == 0 {
            break;
        }
        act.touch();
        send(w, &buf[..n], act.idle).await?;
        act.add(dir, n);
        count(dir, n as u64);
    }
    // Half-close: the destination sees the source's FIN. A destination
    // that is already gone makes this fail, which changes nothing.
    let _ = w.shutdown().await;
    Ok(())
}

/// Resolves once no byte has moved either way for the idle timeout.
async fn idle_watch(act: &Activity) {
    loop {
        let due = act.last() + act.idle;
        if Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}

/// The tunnel's end when one direction failed.
fn fault_end(dir: Direction, f: &Fault) -> (TunnelEnd, String) {
    // A read fault is the source's, a write fault the destination's.
    let (client_side, what, e) = match (dir, f) {
        (Direction::FromClient, Fault::Read(e)) => (true, "reading from the client", e),
        (Direction::FromClient, Fault::Write(e)) => (false, "writing to the provider", e),
        (Direction::FromUpstream, Fault::Read(e)) => (false, "reading from the provider", e),
        (Direction::FromUpstream, Fault::Write(e)) => (true, "writing to the client", e),
    };
    let end = if client_side {
        TunnelEnd::ClientClosed
    } else {
        TunnelEnd::UpstreamError
    };
    (end, format!("{what}: {}", e.kind()))
}

/// Run a tunnel until it ends, then close both sides.
///
/// `from_client` / `from_upstream` are bytes each side sent before the
/// tunnel started; `count` sees every byte moved, as it moves (live
/// metrics for long sessions).
pub async fn run<C, U>(
    client: C,
    upstream: U,
    from_client: Bytes,
    from_upstream: Bytes,
    idle: Duration,
    count: &(dyn Fn(Direction, u64) + Sync),
) -> Summary
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let act = Activity {
        idle,
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        from_client: AtomicU64::new(0),
        from_upstream: AtomicU64::new(0),
    };
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let mut closing = CLOSING.subscribe();
    let grace = CLOSE_GRACE.min(idle);

    let (end, detail, clean) = {
        let up = pump(
            &mut cr,
            &mut uw,
            from_client,
            Direction::FromClient,
            &act,
            count,
        );
        let down = pump(
            &mut ur,
            &mut cw,
            from_upstream,
            Direction::FromUpstream,
            &act,
            count,
        );
        let idle_out = idle_watch(&act);
        let after_close = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(up, down, idle_out, after_close);
        let (mut up_done, mut down_done) = (false, false);
        // Which side closed first, once one has.
        let mut first: Option<TunnelEnd> = None;
        loop {
            tokio::select! {
                r = &mut up, if !up_done => {
                    up_done = true;
                    if let Err(f) = r {
                        let (end, detail) = fault_end(Direction::FromClient, &f);
                        break (end, Some(detail), false);
                    }
                    first.get_or_insert(TunnelEnd::ClientClosed);
                }
                r = &mut down, if !down_done => {
                    down_done = true;
                    if let Err(f) = r {
                        let (end, detail) = fault_end(Direction::FromUpstream, &f);
                        break (end, Some(detail), false);
                    }
                    first.get_or_insert(TunnelEnd::UpstreamClosed);
                }
                _ = &mut idle_out => break (TunnelEnd::IdleTimeout, None, false),
                _ = closing.wait_for(|c| *c) => break (TunnelEnd::Shutdown, None, false),
                // Armed once one side has closed: the other did not follow.
                _ = &mut after_close, if first.is_some() => {
                    break (first.unwrap_or(TunnelEnd::ClientClosed), None, false);
                }
            }
            match first {
                Some(end) if up_done && down_done => break (end, None, true),
                // The first close just happened (the other side's comes
                // next, or the grace runs out).
                Some(_) => after_close.as_mut().reset(Instant::now() + grace),
                None => {}
            }
        }
    };
    if !clean {
        // Cut: tell both sides now rather than leaving it to the drop, so
        // TLS peers get a close_notify and the FIN leaves before any RST.
        let _ = tokio::time::timeout(CLOSE_WRITE_LIMIT, async {
            let _ = tokio::join!(cw.shutdown(), uw.shutdown());
        })
        .await;
    }
    Summary {
        end,
        detail,
        from_client: act.from_client.load(Ordering::Relaxed),
        from_upstream: act.from_upstream.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn no_count(_: Direction, _: u64) {}

    #[tokio::test]
    async fn bytes_flow_both_ways_with_prefixes_first_and_close_ends_it() {
        let (client, mut client_peer) = duplex(64);
        let (upstream, mut upstream_peer) = duplex(64);
        let counted = AtomicU64::new(0);
        let count = |_: Direction, n: u64| {
            counted.fetch_add(n, Ordering::Relaxed);
        };
        let tunnel = run(
            client,
            upstream,
            Bytes::from_static(b"early-"),
            Bytes::from_static(b"hello-"),
            Duration::from_secs(10),
            &count,
        );
        let peers = async {
            client_peer.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 10];
            upstream_peer.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"early-ping");
            upstream_peer.write_all(b"pong").await.unwrap();
            let mut got = [0u8; 10];
            client_peer.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello-pong");
            // The provider closes; the client sees EOF, then closes too.
            drop(upstream_peer);
            let mut rest = Vec::new();
            client_peer.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            drop(client_peer);
        };
        let (summary, ()) = tokio::join!(tunnel, peers);
        assert_eq!(summary.end, TunnelEnd::UpstreamClosed);
        assert_eq!(summary.from_client, 10);
        assert_eq!(summary.from_upstream, 10);
        assert_eq!(counted.load(Ordering::Relaxed), 20);
    }

    #[tokio::test]
    async fn a_client_that_closes_first_is_client_closed_and_the_fin_is_passed_on() {
        let (client, client_peer) = duplex(64);
        let (upstream, mut upstream_peer) = duplex(64);
        let tunnel = run(
            client,
            upstream,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(10),
            &no_count,
        );
        let peers = async {
            drop(client_peer);
            let mut rest = Vec::new();
            upstream_peer.read_to_end(&mut rest).await.unwrap();
            drop(upstream_peer);
        };
        let (summary, ()) = tokio::join!(tunnel, peers);
        assert_eq!(summary.end, TunnelEnd::ClientClosed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_ends_at_the_idle_timeout_and_traffic_defers_it() {
        let (client, mut client_peer) = duplex(64);
        let (upstream, mut upstream_peer) = duplex(64);
        let started = Instant::now();
        let tunnel = run(
            client,
            upstream,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(10),
            &no_count,
        );
        let peers = async {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_peer.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            upstream_peer.read_exact(&mut b).await.unwrap();
            (client_peer, upstream_peer)
        };
        let (summary, _peers) = tokio::join!(tunnel, peers);
        assert_eq!(summary.end, TunnelEnd::IdleTimeout);
        // 6 s of silence, a byte, then 10 s of silence.
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(16), "{took:?}");
        assert!(took < Duration::from_secs(17), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_ignores_the_close_is_cut_after_the_grace() {
        let (client, client_peer) = duplex(64);
        let (upstream, upstream_peer) = duplex(64);
        let started = Instant::now();
        drop(client_peer);
        // The provider never closes.
        let summary = run(
            client,
            upstream,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(300),
            &no_count,
        )
        .await;
        assert_eq!(summary.end, TunnelEnd::ClientClosed);
        assert!(started.elapsed() < CLOSE_GRACE + Duration::from_secs(1));
        drop(upstream_peer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut_although_it_keeps_sending() {
        let (client, mut client_peer) = duplex(64);
        let (upstream, upstream_peer) = duplex(64);
        let (mut up_r, mut up_w) = tokio::io::split(upstream_peer);
        let started = Instant::now();
        let tunnel = run(
            client,
            upstream,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(10),
            &no_count,
        );
        // The provider sends far more than the client reads (nothing),
        // while the client keeps talking: bytes move, but one way is stuck.
        let flood = async {
            let junk = [0u8; 1024];
            while up_w.write_all(&junk).await.is_ok() {}
        };
        let talk = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client_peer.write_all(b"x").await.is_err() {
                    break;
                }
            }
        };
        let listen = async {
            let mut b = [0u8; 64];
            while up_r.read(&mut b).await.is_ok_and(|n| n > 0) {}
        };
        let summary = tokio::select! {
            s = tunnel => s,
            _ = async { tokio::join!(flood, talk, listen) } => panic!("the peers ended first"),
            _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("the stuck tunnel stayed open"),
        };
        assert_eq!(summary.end, TunnelEnd::ClientClosed);
        assert!(
            summary
                .detail
                .as_deref()
                .unwrap_or("")
                .contains("writing to the client"),
            "{summary:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(11),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_broken_provider_is_an_upstream_error() {
        let (client, _client_peer) = duplex(64);
        let summary = run(
            client,
            Broken,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(10),
            &no_count,
        )
        .await;
        assert_eq!(summary.end, TunnelEnd::UpstreamError);
        assert!(summary
            .detail
            .unwrap()
            .contains("reading from the provider"));
    }

    /// A stream whose reads fail at once (a reset connection).
    struct Broken;

    impl AsyncRead for Broken {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
        }
    }

    impl AsyncWrite for Broken {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
}
