//! Finding where an HTTP/1 request head ends in the bytes read so far, and
//! what its request line names, without copying or parsing it (Pingora
//! parses it afterwards). Pure functions only.

use crate::config::Api;

/// Longest request target kept for a refused head: enough to match any
/// route prefix, bounded so a huge URL costs nothing.
const TARGET_KEEP: usize = 2048;

/// Progress through one request head.
#[derive(Debug, Default, Clone)]
pub struct HeadScan {
    /// Bytes of this head seen so far.
    pub seen: usize,
    /// The line being read has something in it besides a CR.
    line_has_content: bool,
    /// The request line has begun (empty lines before it do not end a head,
    /// RFC 9112 §2.2).
    started: bool,
}

impl HeadScan {
    /// Account for the next bytes read. Returns how many of them belong to
    /// the head when it ends among them (the rest is body or the next
    /// request), else `None`. A head ends at its first empty line; bare LF
    /// line ends count too, as httparse accepts them.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut from = 0;
        while let Some(i) = memchr::memchr(b'\n', &bytes[from..]) {
            let line = &bytes[from..from + i];
            let content = self.line_has_content || has_content(line);
            from += i + 1;
            self.line_has_content = false;
            if content {
                self.started = true;
            } else if self.started {
                self.seen += from;
                return Some(from);
            }
        }
        self.line_has_content |= has_content(&bytes[from..]);
        self.seen += bytes.len();
        None
    }
}

fn has_content(partial_line: &[u8]) -> bool {
    !matches!(partial_line, [] | [b'\r'])
}

/// The method at the start of a head and the rest of its request line from
/// the target on, when the bytes look like a request line with an
/// origin-form target. Looks at a few bytes only: the target's end is found
/// by [`target_path`], when it is needed.
pub fn request_line(head_start: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = head_start.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let line = &head_start[start..];
    // Methods are short tokens; do not look further for the space.
    let sp = memchr::memchr(b' ', &line[..line.len().min(24)])?;
    let rest = &line[sp + 1..];
    rest.starts_with(b"/").then_some((&line[..sp], rest))
}

/// The path of the request target at the start of `rest` (query string
/// dropped: it can carry keys), cut to a bounded length at a character
/// boundary.
pub fn target_path(rest: &[u8]) -> String {
    let rest = &rest[..rest.len().min(TARGET_KEEP)];
    let end = memchr::memchr3(b' ', b'\r', b'\n', rest).unwrap_or(rest.len());
    let path = rest[..end].split(|b| *b == b'?').next().unwrap_or_default();
    match std::str::from_utf8(path) {
        Ok(s) => s.to_string(),
        Err(e) => String::from_utf8_lossy(&path[..e.valid_up_to()]).into_owned(),
    }
}

/// The dialect a request target suggests (see [`crate::dialect::guess_api`]);
/// `rest` is the request line from the target on.
pub fn api_hint(rest: &[u8]) -> Api {
    // The well-known prefixes are short and ASCII.
    let head = &rest[..rest.len().min(32)];
    let text = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
    };
    crate::dialect::guess_api(text, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in(pieces: &[&[u8]]) -> (HeadScan, Option<(usize, usize)>) {
        let mut s = HeadScan::default();
        for (i, p) in pieces.iter().enumerate() {
            if let Some(n) = s.feed(p) {
                return (s, Some((i, n)));
            }
        }
        (s, None)
    }

    #[test]
    fn a_head_ends_at_its_first_empty_line() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\nBODY";
        let (s, end) = scan_in(&[head]);
        assert_eq!(end, Some((0, head.len() - 4)));
        assert_eq!(s.seen, head.len() - 4);
    }

    #[test]
    fn the_end_is_found_across_any_split() {
        let head = b"POST /v1/messages HTTP/1.1\r\nhost: a\r\nx: y\r\n\r\n{}";
        let len = head.len() - 2;
        for cut in 0..=head.len() {
            for cut2 in cut..=head.len() {
                let (s, end) = scan_in(&[&head[..cut], &head[cut..cut2], &head[cut2..]]);
                let (piece, n) = end.unwrap_or_else(|| panic!("cuts {cut} {cut2}"));
                let before = [0, cut, cut2][piece];
                assert_eq!(before + n, len, "cuts {cut} {cut2}");
                assert_eq!(s.seen, len);
            }
        }
    }

    #[test]
    fn bare_lf_line_ends_count() {
        let (_, end) = scan_in(&[b"GET / HTTP/1.1\nhost: a\n\nrest"]);
        assert_eq!(end, Some((0, 24)));
        let (_, end) = scan_in(&[b"GET / HTTP/1.1\r\nhost: a\n\r\nrest"]);
        assert_eq!(end, Some((0, 26)));
    }

    #[test]
    fn empty_lines_before_the_request_line_do_not_end_it() {
        let (s, end) = scan_in(&[b"\r\n\r\n\nGET / HTTP/1.1\r\n", b"h: v\r\n"]);
        assert_eq!(end, None);
        assert_eq!(s.seen, 27);
        let (_, end) = scan_in(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(end, Some((0, 22)));
    }

    #[test]
    fn an_unfinished_head_counts_every_byte() {
        let (s, end) = scan_in(&[b"GET / HTTP/1.1\r\nx: ", &[b'a'; 1000], b"\r\n"]);
        assert_eq!(end, None);
        assert_eq!(s.seen, 16 + 3 + 1000 + 2);
    }

    #[test]
    fn request_line_parts() {
        let (m, rest) = request_line(b"POST /v1/messages?key=k HTTP/1.1\r\n").unwrap();
        assert_eq!(m, b"POST");
        assert_eq!(target_path(rest), "/v1/messages");
        // Unfinished line: the target so far.
        let (_, rest) = request_line(b"\r\nGET /v1/chat/compl").unwrap();
        assert_eq!(target_path(rest), "/v1/chat/compl");
        assert!(request_line(b"GET http://x/ HTTP/1.1").is_none());
        assert!(request_line(b"x-header: value").is_none());
        assert!(request_line(b"").is_none());
    }

    #[test]
    fn target_paths_drop_the_query_and_stay_bounded() {
        assert_eq!(
            target_path(b"/v1/messages?key=secret HTTP/1.1"),
            "/v1/messages"
        );
        assert_eq!(target_path(b"/v1/x\r\n"), "/v1/x");
        let long = [b'a'; 5000];
        assert_eq!(target_path(&long).len(), TARGET_KEEP);
        let mut bad = b"/v1/\xc3".to_vec();
        bad.extend_from_slice(b"x HTTP/1.1");
        assert_eq!(target_path(&bad), "/v1/");
    }

    #[test]
    fn dialect_hints() {
        assert_eq!(api_hint(b"/v1/messages HTTP/1.1"), Api::Anthropic);
        assert_eq!(api_hint(b"/v1/chat/completions"), Api::OpenAi);
        assert_eq!(api_hint(b"/v1/messages\xff\xfe"), Api::Anthropic);
    }
}
