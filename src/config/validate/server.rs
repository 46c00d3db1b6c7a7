//! The `listen` and `server` sections: where the process listens, and how it
//! runs (threads, pid file, upgrade socket, drain and shutdown times).

use super::{ms, Errors};
use crate::config::schema::{Listen, ServerSection};
use crate::config::ServerSettings;
use std::net::SocketAddr;

/// The proxy and admin addresses, in that order.
pub(super) fn listen(errs: &mut Errors, l: &Listen) -> Option<(SocketAddr, SocketAddr)> {
    let proxy = socket_addr(errs, "listen.proxy", &l.proxy);
    let admin = socket_addr(errs, "listen.admin", &l.admin);
    if let (Some(p), Some(a)) = (proxy, admin) {
        if p == a {
            errs.push("listen.admin", "must differ from listen.proxy");
            return None;
        }
    }
    Some((proxy?, admin?))
}

pub(super) fn server(errs: &mut Errors, s: &ServerSection) -> Option<ServerSettings> {
    let before = errs.0.len();
    if s.threads == 0 {
        errs.push("server.threads", "must be at least 1");
    }
    if s.pid_file.is_empty() {
        errs.push("server.pid_file", "must not be empty");
    }
    if s.upgrade_sock.is_empty() {
        errs.push("server.upgrade_sock", "must not be empty");
    }
    if errs.0.len() != before {
        return None;
    }
    Some(ServerSettings {
        threads: s.threads,
        work_stealing: s.work_stealing,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        drain_delay: ms(s.drain_delay_ms),
        shutdown_timeout: ms(s.shutdown_timeout_ms),
    })
}

fn socket_addr(errs: &mut Errors, path: &str, v: &str) -> Option<SocketAddr> {
    match v.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                path,
                format!("{v:?} is not an IP:port address (e.g. \"127.0.0.1:8787\")"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_needs_two_distinct_addresses() {
        let mut errs = Errors(Vec::new());
        let (p, a) = listen(&mut errs, &Listen::default()).unwrap();
        assert_eq!((p.port(), a.port()), (8787, 9090));
        let same = Listen {
            proxy: "127.0.0.1:1".into(),
            admin: "127.0.0.1:1".into(),
        };
        assert_eq!(listen(&mut errs, &same), None);
        assert_eq!(errs.paths(), ["listen.admin"]);
        let mut errs = Errors(Vec::new());
        let bad = Listen {
            proxy: "localhost:1".into(),
            admin: "127.0.0.1".into(),
        };
        assert_eq!(listen(&mut errs, &bad), None);
        assert_eq!(errs.paths(), ["listen.proxy", "listen.admin"]);
        assert_eq!(
            errs.0[0].reason,
            "\"localhost:1\" is not an IP:port address (e.g. \"127.0.0.1:8787\")"
        );
    }

    #[test]
    fn server_settings_are_typed_or_every_problem_reported() {
        let mut errs = Errors(Vec::new());
        let s = server(&mut errs, &ServerSection::default()).unwrap();
        assert_eq!(s.threads, 2);
        assert!(
            s.work_stealing,
            "work stealing is Pingora's default and stays on"
        );
        assert_eq!(s.drain_delay, ms(5000));
        assert_eq!(s.shutdown_timeout, ms(25000));
        assert!(errs.0.is_empty());
        let bad = ServerSection {
            threads: 0,
            pid_file: String::new(),
            upgrade_sock: String::new(),
            ..ServerSection::default()
        };
        assert_eq!(server(&mut errs, &bad), None);
        assert_eq!(
            errs.paths(),
            ["server.threads", "server.pid_file", "server.upgrade_sock"]
        );
    }

    #[test]
    fn work_stealing_is_a_bool_that_reaches_the_settings() {
        let file = crate::config::parse_yaml("server: { work_stealing: false }\n").unwrap();
        let mut errs = Errors(Vec::new());
        let s = server(&mut errs, &file.server).unwrap();
        assert!(!s.work_stealing);
        assert!(errs.0.is_empty());
        let bad = crate::config::parse_yaml("server: { work_stealing: sometimes }\n").unwrap_err();
        assert_eq!(bad.0.len(), 1, "{bad:?}");
        assert_eq!(bad.0[0].path, "server.work_stealing");
    }
}
