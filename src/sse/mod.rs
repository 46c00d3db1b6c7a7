//! Server-sent-event framing of an upstream body: forward whole events only.
//!
//! Forwarding at event boundaries costs no latency (a client can only act on
//! a complete event) and means that when an upstream dies mid-event the
//! half event is dropped, so the error event steadfast appends is parsed
//! cleanly instead of being glued onto a broken line.

pub mod kind;

use bytes::{Bytes, BytesMut};

/// A single event larger than this is forwarded unframed rather than
/// buffered without bound.
const MAX_PENDING: usize = 1 << 20;

#[derive(Default)]
pub struct SseFramer {
    pending: BytesMut,
}

impl SseFramer {
    pub fn new() -> Self {
        SseFramer::default()
    }

    /// Feed one upstream chunk; returns the complete events ready to forward.
    pub fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        if self.pending.is_empty() {
            // The common case: upstreams write one or more whole events per
            // chunk, so the chunk is forwarded without a copy.
            match last_boundary(&chunk) {
                Some(end) if end == chunk.len() => return Some(chunk),
                Some(end) => {
                    self.pending.extend_from_slice(&chunk[end..]);
                    return Some(chunk.slice(..end));
                }
                None => {
                    self.pending.extend_from_slice(&chunk);
                    return self.overflow();
                }
            }
        }
        self.pending.extend_from_slice(&chunk);
        match last_boundary(&self.pending) {
            Some(end) => Some(self.pending.split_to(end).freeze()),
            None => self.overflow(),
        }
    }

    fn overflow(&mut self) -> Option<Bytes> {
        (self.pending.len() > MAX_PENDING).then(|| self.pending.split().freeze())
    }

    /// Bytes of an event that has not been terminated yet.
    pub fn partial_len(&self) -> usize {
        self.pending.len()
    }

    /// At a clean end of the upstream body: whatever is left (an upstream
    /// that omits the final blank line still gets its last bytes through).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.pending.split().freeze())
    }
}

/// Index just past the last blank line (event terminator) in `b`.
fn last_boundary(b: &[u8]) -> Option<usize> {
    let mut i = b.len();
    while i >= 2 {
        let c = b[i - 1];
        let p = b[i - 2];
        if c == b'\n' && (p == b'\n' || (p == b'\r' && i >= 3 && b[i - 3] == b'\n')) {
            return Some(i);
        }
        // A bare-CR terminated stream ("\r\r"), but not the first half of
        // "\r\n\r\n" split across chunks.
        if c == b'\r' && p == b'\r' {
            return Some(i);
        }
        i -= 1;
    }
    None
}

/// Iterate over the events in a framed buffer, yielding (event name, data).
/// Events end at a blank line (LF or CRLF line endings); multi-line data
/// fields are joined with '\n'; comments and events without data are
/// skipped, as an SSE client does.
pub fn events(buf: &[u8]) -> Events<'_> {
    Events {
        lines: std::str::from_utf8(buf).unwrap_or("").split('\n'),
    }
}

pub struct Events<'a> {
    lines: std::str::Split<'a, char>,
}

impl<'a> Iterator for Events<'a> {
    type Item = (Option<&'a str>, String);

    fn next(&mut self) -> Option<Self::Item> {
        let mut name = None;
        let mut data: Option<String> = None;
        loop {
            let Some(line) = self.lines.next() else {
                // An unterminated last event still counts (see
                // SseFramer::finish).
                return data.map(|d| (name, d));
            };
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                if let Some(d) = data.take() {
                    return Some((name, d));
                }
                name = None;
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = line.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(v);
                    }
                    None => data = Some(v.to_string()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_events_pass_through_without_copy() {
        let mut f = SseFramer::new();
        let chunk = Bytes::from_static(b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n");
        let out = f.push(chunk.clone()).unwrap();
        assert_eq!(out.as_ptr(), chunk.as_ptr());
        assert_eq!(f.partial_len(), 0);
    }

    #[test]
    fn partial_event_is_held_until_complete() {
        let mut f = SseFramer::new();
        assert_eq!(
            f.push(Bytes::from_static(b"data: 1\n\ndata: 2")).unwrap(),
            Bytes::from_static(b"data: 1\n\n")
        );
        assert_eq!(f.partial_len(), 7);
        assert!(f.push(Bytes::from_static(b"3")).is_none());
        assert_eq!(
            f.push(Bytes::from_static(b"\n\n")).unwrap(),
            Bytes::from_static(b"data: 23\n\n")
        );
        assert_eq!(f.partial_len(), 0);
    }

    #[test]
    fn crlf_events_and_split_terminators() {
        let mut f = SseFramer::new();
        assert!(f.push(Bytes::from_static(b"data: x\r\n\r")).is_none());
        assert_eq!(
            f.push(Bytes::from_static(b"\n")).unwrap(),
            Bytes::from_static(b"data: x\r\n\r\n")
        );
        assert_eq!(last_boundary(b"data: y\r\n\r\n"), Some(11));
        assert_eq!(last_boundary(b"data: y\n"), None);
    }

    #[test]
    fn finish_flushes_unterminated_tail() {
        let mut f = SseFramer::new();
        assert!(f.push(Bytes::from_static(b"data: [DONE]")).is_none());
        assert_eq!(f.finish().unwrap(), Bytes::from_static(b"data: [DONE]"));
        assert!(f.finish().is_none());
    }

    #[test]
    fn oversized_event_is_not_buffered_forever() {
        let mut f = SseFramer::new();
        let big = Bytes::from(vec![b'a'; MAX_PENDING + 1]);
        assert_eq!(f.push(big).unwrap().len(), MAX_PENDING + 1);
        assert_eq!(f.partial_len(), 0);
    }

    #[test]
    fn event_iteration() {
        let buf = b"event: message_start\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\n: comment\n\n";
        let evs: Vec<_> = events(buf).collect();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].0, Some("message_start"));
        assert_eq!(evs[0].1, "{\"a\":1}");
        assert_eq!(evs[1], (None, "x\ny".to_string()));
    }

    #[test]
    fn crlf_events_and_an_unterminated_tail() {
        let buf = b"event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n\r\n: ping\r\n\r\ndata: tail";
        let evs: Vec<_> = events(buf).collect();
        assert_eq!(
            evs,
            vec![
                (Some("a"), "1".to_string()),
                (Some("b"), "2".to_string()),
                (None, "tail".to_string())
            ]
        );
        // A name without data is not an event; it does not leak into the next.
        let evs: Vec<_> = events(b"event: x\n\ndata: 3\n\n").collect();
        assert_eq!(evs, vec![(None, "3".to_string())]);
    }
}
