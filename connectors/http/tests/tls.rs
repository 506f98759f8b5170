//! The servers' TLS against an independent client: ureq over the system OpenSSL (native-tls).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use pavilion_http::local_ca::{Issued, LocalCa};
use pavilion_http::{serve, ServerTls, TlsError};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn tls(&self, server: &Issued, client_ca: Option<&str>) -> Result<ServerTls, TlsError> {
        let ca = client_ca.map(|pem| self.write("client-ca.pem", pem));
        ServerTls::from_pem_files(
            &self.write("server.pem", &server.cert_pem),
            &self.write("server.key", &server.key_pem),
            ca.as_deref(),
        )
    }
}

/// Serves a one-route router on a loopback port of its own runtime thread.
fn start(tls: Option<ServerTls>) -> SocketAddr {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            sender.send(listener.local_addr().unwrap()).unwrap();
            let router = Router::new().route("/hello", get(|| async { "hello\n" }));
            serve(listener, tls, router, std::future::pending())
                .await
                .unwrap();
        });
    });
    receiver.recv().unwrap()
}

fn client(trusted: Option<&str>, identity: Option<&Issued>) -> ureq::Agent {
    let mut tls = native_tls::TlsConnector::builder();
    if let Some(pem) = trusted {
        tls.add_root_certificate(native_tls::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    if let Some(id) = identity {
        tls.identity(
            native_tls::Identity::from_pkcs8(id.cert_pem.as_bytes(), id.key_pem.as_bytes())
                .unwrap(),
        );
    }
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .tls_connector(Arc::new(tls.build().unwrap()))
        .build()
}

fn get_hello(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    agent
        .get(url)
        .call()
        .map_err(|e| e.to_string())
        .map(|r| r.into_string().unwrap())
}

#[test]
fn https_serves_a_client_that_trusts_the_ca_and_refuses_others() {
    let ca = LocalCa::new("test CA").unwrap();
    let files = Files::new();
    let tls = files
        .tls(&ca.server(&["127.0.0.1", "localhost"]).unwrap(), None)
        .unwrap();
    assert!(!tls.requires_client_certificates());
    let addr = start(Some(tls));
    let url = format!("https://{addr}/hello");

    assert_eq!(
        get_hello(&client(Some(ca.cert_pem()), None), &url).unwrap(),
        "hello\n"
    );
    // By name as well as by address: both are in the certificate.
    let by_name = format!("https://localhost:{}/hello", addr.port());
    assert_eq!(
        get_hello(&client(Some(ca.cert_pem()), None), &by_name).unwrap(),
        "hello\n"
    );

    let untrusted = get_hello(&client(None, None), &url).unwrap_err();
    assert!(untrusted.contains("certificate"), "{untrusted}");
    let other_ca = LocalCa::new("another CA").unwrap();
    let wrong_ca = get_hello(&client(Some(other_ca.cert_pem()), None), &url).unwrap_err();
    assert!(wrong_ca.contains("certificate"), "{wrong_ca}");

    // Plain HTTP to the TLS port gets no answer.
    let plain = get_hello(&client(None, None), &format!("http://{addr}/hello"));
    assert!(plain.is_err(), "{plain:?}");
}

#[test]
fn a_server_requiring_client_certificates_admits_only_its_cas() {
    let ca = LocalCa::new("server CA").unwrap();
    let tenants_ca = LocalCa::new("tenants CA").unwrap();
    let files = Files::new();
    let tls = files
        .tls(
            &ca.server(&["127.0.0.1"]).unwrap(),
            Some(tenants_ca.cert_pem()),
        )
        .unwrap();
    assert!(tls.requires_client_certificates());
    let url = format!("https://{}/hello", start(Some(tls)));

    let lender = tenants_ca.client("lender").unwrap();
    assert_eq!(
        get_hello(&client(Some(ca.cert_pem()), Some(&lender)), &url).unwrap(),
        "hello\n"
    );
    // No certificate, or one from another CA (here the server's own): refused at the handshake.
    let none = get_hello(&client(Some(ca.cert_pem()), None), &url).unwrap_err();
    let stranger = ca.client("lender").unwrap();
    let foreign = get_hello(&client(Some(ca.cert_pem()), Some(&stranger)), &url).unwrap_err();
    // The server's TLS alert reaches the client: what it lacks, or that its CA is unknown.
    assert!(none.contains("certificate required"), "{none}");
    assert!(foreign.contains("unknown ca"), "{foreign}");
}

#[test]
fn a_stalled_handshake_does_not_hold_up_other_clients() {
    let ca = LocalCa::new("test CA").unwrap();
    let files = Files::new();
    let addr = start(Some(
        files
            .tls(&ca.server(&["127.0.0.1"]).unwrap(), None)
            .unwrap(),
    ));
    // Three connections that say a few bytes and then nothing.
    let stalled: Vec<_> = (0..3)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(&[0x16, 0x03, 0x01]).unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let url = format!("https://{addr}/hello");
    assert_eq!(
        get_hello(&client(Some(ca.cert_pem()), None), &url).unwrap(),
        "hello\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[test]
fn plain_http_is_served_without_tls() {
    let addr = start(None);
    assert_eq!(
        get_hello(&client(None, None), &format!("http://{addr}/hello")).unwrap(),
        "hello\n"
    );
}

#[test]
fn unusable_files_are_named_in_the_error() {
    let ca = LocalCa::new("test CA").unwrap();
    let server = ca.server(&["127.0.0.1"]).unwrap();
    let other = ca.server(&["127.0.0.1"]).unwrap();
    let files = Files::new();
    let cert = files.write("server.pem", &server.cert_pem);
    let key = files.write("server.key", &server.key_pem);
    let text = |r: Result<ServerTls, TlsError>| r.unwrap_err().to_string();

    let missing = text(ServerTls::from_pem_files(
        Path::new("/nonexistent.pem"),
        &key,
        None,
    ));
    assert!(missing.contains("/nonexistent.pem"), "{missing}");
    let garbage = files.write("garbage.pem", "not a certificate\n");
    let no_cert = text(ServerTls::from_pem_files(&garbage, &key, None));
    assert!(
        no_cert.contains("garbage.pem") && no_cert.contains("no PEM certificate"),
        "{no_cert}"
    );
    let no_key = text(ServerTls::from_pem_files(&cert, &garbage, None));
    assert!(
        no_key.contains("garbage.pem") && no_key.contains("private key"),
        "{no_key}"
    );
    // A key that is not the certificate's.
    let other_key = files.write("other.key", &other.key_pem);
    let mismatch = text(ServerTls::from_pem_files(&cert, &other_key, None));
    assert!(
        mismatch.contains("do not make a TLS configuration"),
        "{mismatch}"
    );
    let no_ca = text(ServerTls::from_pem_files(&cert, &key, Some(&garbage)));
    assert!(no_ca.contains("client CA"), "{no_ca}");
}
