//! HTTPS upstreams: rustls with the system trust store (which honours
//! SSL_CERT_FILE), certificate and hostname verification on.

mod common;

use common::http::{anthropic_body, Request};
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = r#"
import http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        out = json.dumps({"type": "message", "host": self.headers.get("host"),
                          "len": len(body), "usage": {"input_tokens": 1, "output_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (installed by scripts/ensure-deps.sh)");
    assert!(st.success(), "openssl {args:?}");
}

/// A throwaway CA and a server certificate for "localhost" signed by it.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=steadfast test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "srv.pem",
        ],
    );
}

async fn https_upstream(dir: &Path) -> (Kill, u16) {
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .arg(dir.join("server.py"))
        .arg(port.to_string())
        .arg(dir.join("srv.pem"))
        .arg(dir.join("srv.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "https upstream did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (Kill(child), port)
}

fn config(port: u16) -> String {
    format!(
        "providers:\n  - {{ name: secure, api: anthropic, base_url: \"https://localhost:{port}\" }}\nroutes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [secure] }}\n"
    )
}

#[tokio::test]
async fn https_upstream_with_trusted_ca_works() {
    let dir = test_dir("tls-ok");
    make_certs(&dir);
    let (_srv, port) = https_upstream(&dir).await;
    let px = Proxy::builder("tls-ok", &config(port))
        .env("SSL_CERT_FILE", dir.join("ca.pem").to_str().unwrap())
        .start()
        .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("secure"));
    let v = r.json();
    assert_eq!(
        v["host"],
        format!("localhost:{port}"),
        "Host must be the provider's"
    );
    assert_eq!(
        v["len"].as_u64().unwrap() as usize,
        anthropic_body("m", false).len()
    );
}

#[tokio::test]
async fn untrusted_certificate_is_a_network_failure() {
    let dir = test_dir("tls-untrusted");
    make_certs(&dir);
    let (_srv, port) = https_upstream(&dir).await;
    // The system store does not know the throwaway CA.
    let px = Proxy::builder("tls-untrusted", &config(port)).start().await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-steadfast-error-class"), Some("network"));
}
