//! `steadfast healthcheck`: a tiny HTTP/1.1 GET for container healthchecks,
//! so images need no curl. Plain HTTP only (the admin listener is local).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Exit code: 0 when the URL answers 2xx, else 1 (with the reason on stderr).
pub fn run(url: &str) -> i32 {
    match get_status(url) {
        Ok(s) if (200..300).contains(&s) => 0,
        Ok(s) => {
            eprintln!("healthcheck: {url} answered {s}");
            1
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            1
        }
    }
}

pub fn get_status(url: &str) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr_str = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = addr_str
        .to_socket_addrs()
        .map_err(|e| format!("bad address {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {authority}"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: steadfast-healthcheck\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut head[n..]).map_err(|e| e.to_string())?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line: {line:?}")),
        _ => Err(format!("not an HTTP response: {line:?}")),
    }
}
