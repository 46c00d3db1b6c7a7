//! Classification of what happened to a request attempt and the
//! decisions that follow from it. Pure functions only: the I/O code reports
//! facts, this module names them.

use pingora_error::ErrorType;
use std::fmt;

/// Why an attempt (or a whole request) did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    Network,
    Timeout,
    RateLimit,
    Server,
    Auth,
    Request,
    /// A 2xx with no content and no tool call, or a stream that ended
    /// before its first content.
    Empty,
    /// A 4xx (or an error event) saying the prompt does not fit the
    /// model's context window: the next provider's model may be larger.
    ContextLength,
    Concurrency,
    Client,
    /// A bug in steadfast itself (a recovered panic). Never the upstream's
    /// fault, so never a reason to fail over.
    Internal,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 11] = [
        ErrorClass::Network,
        ErrorClass::Timeout,
        ErrorClass::RateLimit,
        ErrorClass::Server,
        ErrorClass::Auth,
        ErrorClass::Request,
        ErrorClass::Empty,
        ErrorClass::ContextLength,
        ErrorClass::Concurrency,
        ErrorClass::Client,
        ErrorClass::Internal,
    ];

    /// Classes an upstream attempt can end with; the only ones `failover_on`
    /// may name.
    pub const UPSTREAM: [ErrorClass; 8] = [
        ErrorClass::Network,
        ErrorClass::Timeout,
        ErrorClass::RateLimit,
        ErrorClass::Server,
        ErrorClass::Auth,
        ErrorClass::Request,
        ErrorClass::Empty,
        ErrorClass::ContextLength,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Network => "network",
            ErrorClass::Timeout => "timeout",
            ErrorClass::RateLimit => "rate_limit",
            ErrorClass::Server => "server",
            ErrorClass::Auth => "auth",
            ErrorClass::Request => "request",
            ErrorClass::Empty => "empty",
            ErrorClass::ContextLength => "context_length",
            ErrorClass::Concurrency => "concurrency",
            ErrorClass::Client => "client",
            ErrorClass::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorClass> {
        ErrorClass::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// Whether this failure says something about the provider's health
    /// (feeds the circuit breaker). A bad request or a client that left does
    /// not; a 429 is handled as a cooldown instead. An empty answer is a
    /// provider shedding load without saying so; a prompt too long for one
    /// model says nothing about the provider.
    pub fn counts_against_provider(self) -> bool {
        matches!(
            self,
            ErrorClass::Network | ErrorClass::Timeout | ErrorClass::Server | ErrorClass::Empty
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A small set of classes (the `retry.failover_on` list).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassSet(u16);

impl ClassSet {
    pub fn empty() -> Self {
        ClassSet(0)
    }
    pub fn insert(&mut self, c: ErrorClass) {
        self.0 |= 1 << (c as u16);
    }
    pub fn contains(&self, c: ErrorClass) -> bool {
        self.0 & (1 << (c as u16)) != 0
    }
    pub fn iter(&self) -> impl Iterator<Item = ErrorClass> + '_ {
        ErrorClass::ALL
            .iter()
            .copied()
            .filter(move |c| self.contains(*c))
    }
}

impl FromIterator<ErrorClass> for ClassSet {
    fn from_iter<T: IntoIterator<Item = ErrorClass>>(iter: T) -> Self {
        let mut s = ClassSet::empty();
        for c in iter {
            s.insert(c);
        }
        s
    }
}

impl fmt::Debug for ClassSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Class of an upstream HTTP status; `None` means the attempt succeeded.
pub fn classify_status(status: u16) -> Option<ErrorClass> {
    match status {
        429 => Some(ErrorClass::RateLimit),
        401 | 403 => Some(ErrorClass::Auth),
        400..=499 => Some(ErrorClass::Request),
        500..=599 => Some(ErrorClass::Server),
        _ => None,
    }
}

/// Class of a transport-level failure reported by Pingora's connector or
/// HTTP client while talking to an upstream.
pub fn classify_transport(etype: &ErrorType) -> ErrorClass {
    use ErrorType::*;
    match etype {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            ErrorClass::Timeout
        }
        _ => ErrorClass::Network,
    }
}

/// Whether a transport failure is worth one more try on the same provider
/// within a request: the connection was cut (reset, closed, a read or write
/// error), which often clears at once. Not when nobody listens, the route
/// to the host is gone, or TLS failed: asking again at once gets the same
/// answer and only adds latency.
pub fn transport_worth_retrying(etype: &ErrorType) -> bool {
    use ErrorType::*;
    matches!(etype, ReadError | WriteError | ConnectionClosed)
}

/// Whether an error on a *reused* pooled connection means only that the
/// upstream had closed it while idle, so the request never reached it and
/// may go again on a fresh connection without blaming the provider.
/// Pingora marks such read errors `RetryType::ReusedOnly`; a write that
/// fails with a reset or broken pipe means the same. A TLS or parse error
/// says something about the provider and is not retried this way.
pub fn dead_pooled_connection(e: &pingora_error::Error) -> bool {
    use std::io::ErrorKind::*;
    if matches!(e.retry, pingora_error::RetryType::ReusedOnly) {
        return true;
    }
    e.etype() == &ErrorType::WriteError
        && e.cause
            .as_ref()
            .and_then(|c| c.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
                )
            })
}

/// What one attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Success,
    Failed(ErrorClass),
}

impl AttemptResult {
    pub fn label(self) -> &'static str {
        match self {
            AttemptResult::Success => "success",
            AttemptResult::Failed(c) => c.as_str(),
        }
    }
}

/// The status steadfast answers with when no upstream response can be
/// returned as is: 504 when every attempt timed out, else 502.
pub fn status_for_failed_attempts(classes: &[ErrorClass]) -> (u16, ErrorClass) {
    if !classes.is_empty() && classes.iter().all(|c| *c == ErrorClass::Timeout) {
        (504, ErrorClass::Timeout)
    } else {
        (502, ErrorClass::Network)
    }
}

/// The `outcome` label of `steadfast_requests_total` for a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    Success,
    RequestError,
    UpstreamError,
    Rejected,
    ClientClosed,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 5] = [
        RequestOutcome::Success,
        RequestOutcome::RequestError,
        RequestOutcome::UpstreamError,
        RequestOutcome::Rejected,
        RequestOutcome::ClientClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Success => "success",
            RequestOutcome::RequestError => "request_error",
            RequestOutcome::UpstreamError => "upstream_error",
            RequestOutcome::Rejected => "rejected",
            RequestOutcome::ClientClosed => "client_closed",
        }
    }

    /// Outcome of a request that ended with `class` (None = success).
    pub fn from_class(class: Option<ErrorClass>) -> RequestOutcome {
        match class {
            None => RequestOutcome::Success,
            Some(ErrorClass::Request | ErrorClass::ContextLength) => RequestOutcome::RequestError,
            Some(ErrorClass::Concurrency) => RequestOutcome::Rejected,
            Some(ErrorClass::Client) => RequestOutcome::ClientClosed,
            Some(_) => RequestOutcome::UpstreamError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_spec_classes() {
        assert_eq!(classify_status(200), None);
        assert_eq!(classify_status(204), None);
        assert_eq!(classify_status(304), None);
        assert_eq!(classify_status(429), Some(ErrorClass::RateLimit));
        assert_eq!(classify_status(401), Some(ErrorClass::Auth));
        assert_eq!(classify_status(403), Some(ErrorClass::Auth));
        for s in [400, 404, 413, 422] {
            assert_eq!(classify_status(s), Some(ErrorClass::Request), "{s}");
        }
        for s in [500, 502, 503, 529] {
            assert_eq!(classify_status(s), Some(ErrorClass::Server), "{s}");
        }
    }

    #[test]
    fn transport_errors_split_into_timeout_and_network() {
        assert_eq!(
            classify_transport(&ErrorType::ConnectTimedout),
            ErrorClass::Timeout
        );
        assert_eq!(
            classify_transport(&ErrorType::ReadTimedout),
            ErrorClass::Timeout
        );
        assert_eq!(
            classify_transport(&ErrorType::ConnectRefused),
            ErrorClass::Network
        );
        assert_eq!(
            classify_transport(&ErrorType::ConnectionClosed),
            ErrorClass::Network
        );
        assert_eq!(
            classify_transport(&ErrorType::TLSHandshakeFailure),
            ErrorClass::Network
        );
    }

    #[test]
    fn only_cut_connections_earn_a_second_try_on_the_same_provider() {
        assert!(transport_worth_retrying(&ErrorType::ConnectionClosed));
        assert!(transport_worth_retrying(&ErrorType::ReadError));
        assert!(!transport_worth_retrying(&ErrorType::ConnectRefused));
        assert!(!transport_worth_retrying(&ErrorType::TLSHandshakeFailure));
        assert!(!transport_worth_retrying(&ErrorType::InvalidHTTPHeader));
    }

    #[test]
    fn only_dead_pooled_connections_are_retried_fresh() {
        use pingora_error::{Error, RetryType};
        let mut closed = Error::explain(ErrorType::ConnectionClosed, "x");
        closed.retry = RetryType::ReusedOnly;
        assert!(dead_pooled_connection(&closed));
        let pipe = Error::because(
            ErrorType::WriteError,
            "sending",
            std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        );
        assert!(dead_pooled_connection(&pipe));
        let parse = Error::explain(ErrorType::InvalidHTTPHeader, "garbage");
        assert!(!dead_pooled_connection(&parse));
        let tls = Error::explain(ErrorType::TLSHandshakeFailure, "bad cert");
        assert!(!dead_pooled_connection(&tls));
        let other_write = Error::because(
            ErrorType::WriteError,
            "sending",
            std::io::Error::from(std::io::ErrorKind::InvalidData),
        );
        assert!(!dead_pooled_connection(&other_write));
    }

    #[test]
    fn all_timeouts_give_504_anything_else_502() {
        use ErrorClass::*;
        assert_eq!(status_for_failed_attempts(&[Timeout, Timeout]).0, 504);
        assert_eq!(status_for_failed_attempts(&[Timeout, Network]).0, 502);
        assert_eq!(status_for_failed_attempts(&[Network]).0, 502);
        assert_eq!(status_for_failed_attempts(&[]).0, 502);
    }

    #[test]
    fn class_set_round_trips() {
        let s: ClassSet = [ErrorClass::Network, ErrorClass::Auth]
            .into_iter()
            .collect();
        assert!(s.contains(ErrorClass::Network));
        assert!(s.contains(ErrorClass::Auth));
        assert!(!s.contains(ErrorClass::Request));
        assert_eq!(s.iter().count(), 2);
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn only_health_relevant_classes_count_against_a_provider() {
        assert!(ErrorClass::Server.counts_against_provider());
        assert!(ErrorClass::Network.counts_against_provider());
        assert!(ErrorClass::Timeout.counts_against_provider());
        assert!(!ErrorClass::Request.counts_against_provider());
        assert!(!ErrorClass::Client.counts_against_provider());
        assert!(!ErrorClass::RateLimit.counts_against_provider());
    }

    #[test]
    fn outcomes_follow_the_final_class() {
        assert_eq!(RequestOutcome::from_class(None), RequestOutcome::Success);
        assert_eq!(
            RequestOutcome::from_class(Some(ErrorClass::Request)),
            RequestOutcome::RequestError
        );
        assert_eq!(
            RequestOutcome::from_class(Some(ErrorClass::Concurrency)),
            RequestOutcome::Rejected
        );
        assert_eq!(
            RequestOutcome::from_class(Some(ErrorClass::Client)),
            RequestOutcome::ClientClosed
        );
        assert_eq!(
            RequestOutcome::from_class(Some(ErrorClass::Server)),
            RequestOutcome::UpstreamError
        );
    }
}
